//! `wasmcri image`: the image commands.
//!
//! While a daemon listens on the socket (`--socket`, else the configured one), `import`,
//! `ls`, `rm` and `pull` are its clients over the admin service on that socket
//! (`proto/admin.proto`, served by `wasmcri::server::admin`), as mini-redis's `cli` is the
//! client of its server: the daemon's store, the daemon's checks (an image a container uses
//! is not removed), the daemon the only writer. An import streams the archive (a layout
//! directory is sent as a tar); the daemon never opens a path the command names.
//!
//! With nothing listening there (no socket file, or a stale one), the command opens the
//! store itself, which takes the store lock (`wasmcri::images::lock`): refused while a daemon
//! owns the root, and then the error names the socket that daemon serves. `push` reads a
//! file and talks to a registry only, so it needs neither.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use cri::admin::v1 as pb;
use cri::admin::v1::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint, Uri};

use wasmcri::config::Config;
use wasmcri::images::lock::{Holder, StoreBusy};
use wasmcri::images::{ImageError, ImageStore};

/// Bytes per import message: well under the daemon's message bound
/// (`wasmcri::server::admin::MAX_MESSAGE`), big enough that framing costs nothing.
const CHUNK: usize = 1 << 20;

/// Chunks read ahead of the socket.
const CHUNKS_AHEAD: usize = 4;

/// How long a refused import waits for its archive reader to stop.
const READER_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The `wasmcri image` subcommands.
#[derive(Subcommand)]
pub enum ImageCmd {
    /// Import an OCI image layout (directory or tar, optionally gzip-compressed).
    Import {
        /// The layout directory or tar file.
        path: PathBuf,
        /// Tag the image with this reference.
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    Ls,
    /// Remove an image by reference or ID.
    Rm {
        /// Reference or ID.
        image: String,
    },
    /// Pull an image from a registry.
    Pull {
        /// Reference.
        image: String,
        /// Registry user.
        #[arg(long)]
        user: Option<String>,
        /// Registry password.
        #[arg(long, env = "WASMCRI_REGISTRY_PASSWORD")]
        password: Option<String>,
    },
    /// Publish a .wasm module or component as an OCI Wasm artifact.
    Push {
        /// The .wasm file.
        file: PathBuf,
        /// Target reference (e.g. localhost:5000/hello:v1).
        reference: String,
        /// Registry user.
        #[arg(long)]
        user: Option<String>,
        /// Registry password.
        #[arg(long, env = "WASMCRI_REGISTRY_PASSWORD")]
        password: Option<String>,
        /// Speak plain HTTP to this registry.
        #[arg(long)]
        insecure: bool,
    },
}

/// Why an image command failed, where the cause is the command's setting rather than the
/// image.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A daemon owns the store but serves another socket than the one given.
    #[error(
        "image store {root} belongs to the wasmcri daemon (pid {pid}) serving {serving}, but \
         nothing listens on {socket}: pass --socket {serving} (or the daemon's --config)",
        root = root.display(), serving = serving.display(), socket = socket.display()
    )]
    DaemonElsewhere {
        /// The store root.
        root: PathBuf,
        /// The daemon's PID.
        pid: u32,
        /// The socket the daemon serves.
        serving: PathBuf,
        /// The socket given.
        socket: PathBuf,
    },
    /// A daemon owns the store and will serve the given socket, but does not listen (yet).
    #[error(
        "image store {root} belongs to the wasmcri daemon (pid {pid}), which is not listening \
         on {socket} (starting or stopping); retry",
        root = root.display(), socket = socket.display()
    )]
    DaemonNotListening {
        /// The store root.
        root: PathBuf,
        /// The daemon's PID.
        pid: u32,
        /// The socket given and announced.
        socket: PathBuf,
    },
    /// The socket exists but cannot be connected to for another reason than nobody
    /// listening (permissions, most often: it is root-only).
    #[error("cannot connect to the wasmcri daemon on {socket}: {source}", socket = socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Something listens on the socket that does not serve the admin service.
    #[error("{socket} does not serve wasmcri's admin service: {message}", socket = socket.display())]
    NotAdmin {
        /// The socket.
        socket: PathBuf,
        /// What it answered.
        message: String,
    },
    /// The daemon refused or failed the call.
    #[error("the wasmcri daemon on {socket}: {} ({:?})", status.message(), status.code(), socket = socket.display())]
    Daemon {
        /// The socket.
        socket: PathBuf,
        /// Its answer.
        status: tonic::Status,
    },
    /// Without a daemon: a container recorded in the root uses the image.
    #[error("image {image} is in use by container {container}")]
    InUse {
        /// The image as named.
        image: String,
        /// The container.
        container: String,
    },
    /// The archive to import could not be read.
    #[error("cannot read {path}: {source}", path = path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Runs an image command against the daemon on `config.socket`, or on the store itself when
/// no daemon listens there.
pub async fn run(config: Config, cmd: ImageCmd) -> anyhow::Result<()> {
    if let ImageCmd::Push {
        file,
        reference,
        user,
        password,
        insecure,
    } = cmd
    {
        let mut registry = config.registry.clone();
        if insecure && let Some(host) = reference.split('/').next() {
            registry.insecure.push(host.to_owned());
        }
        let auth = pull_auth(user, password);
        let pushed =
            wasmcri::images::registry::push_wasm(&file, &reference, &auth, &registry).await?;
        println!("{pushed:?}");
        return Ok(());
    }
    let socket = std::path::absolute(&config.socket).unwrap_or_else(|_| config.socket.clone());
    match connect(&socket).await? {
        Some(channel) => remote(&socket, AdminClient::new(channel), cmd).await,
        None => local(&config, &socket, cmd).await,
    }
}

/// Registry credentials from the `--user`/`--password` flags.
fn pull_auth(user: Option<String>, password: Option<String>) -> wasmcri::images::PullAuth {
    wasmcri::images::PullAuth {
        username: user.unwrap_or_default(),
        password: password.unwrap_or_default(),
        ..Default::default()
    }
}

/// Whether a connect error means that no daemon listens: no socket file (or directory), or
/// a socket file nobody accepts on (left by a daemon that was killed).
fn nobody_listens(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

/// A channel to the daemon on `socket`; `None` when nobody listens there.
async fn connect(socket: &Path) -> Result<Option<Channel>, CliError> {
    let failed = |source| CliError::Connect {
        socket: socket.to_owned(),
        source,
    };
    // One probe, so that "nobody listens" is told apart from every other failure before
    // tonic wraps the error.
    match tokio::net::UnixStream::connect(socket).await {
        Ok(_) => {}
        Err(e) if nobody_listens(&e) => return Ok(None),
        Err(e) => return Err(failed(e)),
    }
    let path = socket.to_owned();
    // The URI is required by tonic and unused: every connection goes to the socket.
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .map_err(|e| failed(io::Error::other(e)))?;
    Ok(Some(channel))
}

/// The error of a call the daemon answered with `status`.
fn daemon_error(socket: &Path, status: tonic::Status) -> CliError {
    if status.code() == tonic::Code::Unimplemented {
        CliError::NotAdmin {
            socket: socket.to_owned(),
            message: status.message().to_owned(),
        }
    } else {
        CliError::Daemon {
            socket: socket.to_owned(),
            status,
        }
    }
}

fn print_image(id: &str, tags: &[String]) {
    println!("{id} {}", tags.join(","));
}

fn print_table<'a>(rows: impl Iterator<Item = (&'a str, u64, &'a [String])>) {
    println!("{:<71} {:>10} TAGS", "ID", "SIZE");
    for (id, size, tags) in rows {
        println!("{id:<71} {size:>10} {}", tags.join(","));
    }
}

/// Runs `cmd` as a client of the daemon on `socket`.
async fn remote(
    socket: &Path,
    mut client: AdminClient<Channel>,
    cmd: ImageCmd,
) -> anyhow::Result<()> {
    let err = |status| daemon_error(socket, status);
    match cmd {
        ImageCmd::Import { path, name } => {
            for img in import(&mut client, socket, &path, name).await? {
                print_image(&img.id, &img.repo_tags);
            }
        }
        ImageCmd::Ls => {
            let images = client
                .list_images(pb::ListImagesRequest {})
                .await
                .map_err(err)?
                .into_inner()
                .images;
            print_table(
                images
                    .iter()
                    .map(|i| (i.id.as_str(), i.size, i.repo_tags.as_slice())),
            );
        }
        ImageCmd::Rm { image } => {
            client
                .remove_image(pb::RemoveImageRequest {
                    image: image.clone(),
                })
                .await
                .map_err(err)?;
            println!("removed {image}");
        }
        ImageCmd::Pull {
            image,
            user,
            password,
        } => {
            let img = client
                .pull_image(pb::PullImageRequest {
                    image,
                    username: user.unwrap_or_default(),
                    password: password.unwrap_or_default(),
                })
                .await
                .map_err(err)?
                .into_inner()
                .image
                .unwrap_or_default();
            println!("{}", img.id);
        }
        ImageCmd::Push { .. } => unreachable!("push needs no daemon; handled in run"),
    }
    Ok(())
}

/// Streams the layout at `path` to the daemon: a tar file as it is, a directory as a tar
/// written on the fly, read on a blocking thread a few chunks ahead of the socket.
async fn import(
    client: &mut AdminClient<Channel>,
    socket: &Path,
    path: &Path,
    name: Option<String>,
) -> Result<Vec<pb::Image>, CliError> {
    let read_err = |source| CliError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_AHEAD);
    let src = path.to_owned();
    let producer = tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter::new(tx);
        if meta.is_dir() {
            write_tar(&src, &mut out)?;
        } else {
            io::copy(&mut std::fs::File::open(&src)?, &mut out)?;
        }
        out.flush()
    });
    use tokio_stream::StreamExt;
    let header = pb::ImportImageRequest {
        part: Some(pb::import_image_request::Part::Header(pb::ImportHeader {
            name: name.unwrap_or_default(),
        })),
    };
    let chunks = tokio_stream::wrappers::ReceiverStream::new(rx).map(|c| pb::ImportImageRequest {
        part: Some(pb::import_image_request::Part::Chunk(c)),
    });
    let answer = client
        .import_image(tokio_stream::once(header).chain(chunks))
        .await;
    // A daemon that refused the stream may answer before the reader notices: give it a
    // moment to fail on its own (a read error then is the real cause), but never wait on a
    // reader blocked on a stream nobody drains.
    let produced = match &answer {
        Ok(_) => producer.await,
        Err(_) => tokio::time::timeout(READER_GRACE, producer)
            .await
            .unwrap_or(Ok(Err(io::ErrorKind::BrokenPipe.into()))),
    }
    .unwrap_or_else(|e| Err(io::Error::other(e)));
    match (answer, produced) {
        // The daemon stopped reading (it refused the stream): its answer says why.
        (Err(status), Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            Err(daemon_error(socket, status))
        }
        // Reading failed, so the daemon got a cut archive: the read error is the cause.
        (_, Err(e)) => Err(read_err(e)),
        (Err(status), Ok(())) => Err(daemon_error(socket, status)),
        (Ok(r), Ok(())) => Ok(r.into_inner().images),
    }
}

/// Writes the layout directory `dir` as a tar: its entries at the archive's top level,
/// symlinks kept as symlinks (the daemon's unpacker refuses any that escape).
fn write_tar(dir: &Path, out: &mut impl Write) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if e.file_type()?.is_dir() {
            tar.append_dir_all(&name, e.path())?;
        } else {
            tar.append_path_with_name(e.path(), &name)?;
        }
    }
    tar.into_inner()?.flush()
}

/// Sends what is written to it in [`CHUNK`]-byte messages; fails with `BrokenPipe` once the
/// receiving side is gone.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl ChunkWriter {
    fn new(tx: tokio::sync::mpsc::Sender<Vec<u8>>) -> Self {
        Self {
            buf: Vec::with_capacity(CHUNK),
            tx,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the daemon stopped reading the archive",
            )
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

/// Opens the store at `config`'s root for a command run without a daemon; when a daemon owns
/// it, the error says which socket to use instead of `socket`.
fn open_store(config: &Config, socket: &Path, precompile: bool) -> anyhow::Result<ImageStore> {
    let hook = if precompile {
        // The same precompile step the daemon runs on import/pull.
        let engine = wasmcri::wasm::engine()?;
        Some(wasmcri::wasm::precompile_hook(engine, config.cache_dir()))
    } else {
        None
    };
    let root = config.images_dir();
    match ImageStore::open(&root, hook) {
        Ok(store) => Ok(store),
        Err(ImageError::Busy(busy)) => Err(busy_error(busy, socket)),
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("open image store {}", root.display())))
        }
    }
}

/// What to tell the user when the store is locked: a daemon's holder record names its
/// socket.
fn busy_error(busy: StoreBusy, socket: &Path) -> anyhow::Error {
    match busy.holder {
        Some(Holder {
            pid,
            serving: Some(serving),
        }) => {
            if serving == socket {
                CliError::DaemonNotListening {
                    root: busy.root,
                    pid,
                    socket: serving,
                }
                .into()
            } else {
                CliError::DaemonElsewhere {
                    root: busy.root,
                    pid,
                    serving,
                    socket: socket.to_owned(),
                }
                .into()
            }
        }
        _ => ImageError::Busy(busy).into(),
    }
}

/// The first container recorded under `config`'s root that runs from or mounts the image
/// `id`. The records outlive the daemon, and so do the containers.
fn container_using(config: &Config, id: &str) -> anyhow::Result<Option<String>> {
    let dir = config.meta_dir().join("containers");
    let entries = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("read {}", dir.display()))),
    };
    for entry in entries {
        let p = entry?.path();
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Some(rec) = wasmcri::store::load::<wasmcri::container::ContainerRecord>(&p)? else {
            continue;
        };
        let uses = rec.meta.image_use(id).is_some();
        if uses {
            return Ok(Some(rec.meta.id));
        }
    }
    Ok(None)
}

/// Runs `cmd` on the store itself (no daemon listens on `socket`).
async fn local(config: &Config, socket: &Path, cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Import { path, name } => {
            let store = open_store(config, socket, true)?;
            for img in store.import_layout(&path, name.as_deref()).await? {
                print_image(&img.id, &img.repo_tags);
            }
        }
        ImageCmd::Ls => {
            let store = open_store(config, socket, false)?;
            let images = store.list(&Default::default())?;
            print_table(
                images
                    .iter()
                    .map(|i| (i.id.as_str(), i.size, i.repo_tags.as_slice())),
            );
        }
        ImageCmd::Rm { image } => {
            let store = open_store(config, socket, false)?;
            let id = store.get(&image)?.id;
            if let Some(container) = container_using(config, &id)? {
                return Err(CliError::InUse { image, container }.into());
            }
            store.remove(&image).await?;
            println!("removed {image}");
        }
        ImageCmd::Pull {
            image,
            user,
            password,
        } => {
            let store = open_store(config, socket, true)?;
            let auth = pull_auth(user, password);
            let img = store.pull(&image, &auth, &config.registry).await?;
            println!("{}", img.id);
        }
        ImageCmd::Push { .. } => unreachable!("push needs no store; handled in run"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nobody_listening_is_told_from_other_failures() {
        let d = tempfile::tempdir().unwrap();
        // No socket file at all.
        assert!(
            connect(&d.path().join("none.sock"))
                .await
                .unwrap()
                .is_none()
        );
        // A stale socket file: bound once, nobody accepts.
        let stale = d.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(connect(&stale).await.unwrap().is_none());
        // A path no socket can have (longer than sun_path): a failure, not a reason to write
        // the store beside a daemon.
        let long = d.path().join("x".repeat(200));
        match connect(&long).await {
            Err(CliError::Connect { socket, .. }) => assert_eq!(socket, long),
            other => panic!("expected Connect, got {other:?}"),
        }
    }

    #[test]
    fn chunk_writer_sends_full_chunks_then_the_rest() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let mut w = ChunkWriter::new(tx);
        w.write_all(&vec![7u8; CHUNK * 2 + 3]).unwrap();
        w.flush().unwrap();
        drop(w);
        let sizes: Vec<usize> =
            std::iter::from_fn(|| rx.blocking_recv().map(|c| c.len())).collect();
        assert_eq!(sizes, vec![CHUNK, CHUNK, 3]);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let err = ChunkWriter::new(tx).write_all(&vec![0; CHUNK]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_busy_store_names_the_daemons_socket() {
        let busy = |serving: Option<&str>| StoreBusy {
            root: PathBuf::from("/var/lib/wasmcri/images"),
            holder: Some(Holder {
                pid: 42,
                serving: serving.map(PathBuf::from),
            }),
        };
        let given = Path::new("/tmp/other.sock");
        let msg = busy_error(busy(Some("/run/wasmcri/wasmcri.sock")), given).to_string();
        assert!(
            msg.contains("serving /run/wasmcri/wasmcri.sock")
                && msg.contains("nothing listens on /tmp/other.sock")
                && msg.contains("--socket /run/wasmcri/wasmcri.sock"),
            "{msg}"
        );
        let msg = busy_error(busy(Some("/tmp/other.sock")), given).to_string();
        assert!(msg.contains("not listening on /tmp/other.sock"), "{msg}");
        let msg = busy_error(busy(None), given).to_string();
        assert_eq!(
            msg,
            "image store /var/lib/wasmcri/images is in use by process 42"
        );
    }
}
