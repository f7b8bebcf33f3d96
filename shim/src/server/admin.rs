//! `wasmcri.admin.v1.Admin` (`proto/admin.proto`): the image administration service that
//! `wasmcri image` uses while a daemon runs, served on the CRI socket next to the CRI
//! services (root-only like them).
//!
//! It acts on wasmcri's own image store through the runtime calls the CRI handlers make, so
//! the same checks apply (removal refuses an image a container uses), and the daemon, which
//! owns the store (see [`crate::images::lock`]), stays its only writer. An import arrives as
//! a byte stream, never as a path: the daemon opens nothing the client names. The stream is
//! spooled into the store's temp directory and refused as soon as it passes
//! `[images] max_import_bytes`; the spool file goes when the call ends, whatever the outcome,
//! and a daemon crash leaves it to the sweep of the temp directory at the next start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cri::admin::v1 as pb;
use cri::admin::v1::import_image_request::Part;
use tokio::io::AsyncWriteExt;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::images::{Image, PullAuth};
use crate::runtime::Runtime;

/// Imports spooling at the same time; more wait (their clients are held by flow control), so
/// concurrent imports cannot fill the disk with more than this many maximal archives.
const MAX_CONCURRENT_IMPORTS: usize = 2;

/// Largest message the service accepts: the CLI sends 1 MiB chunks.
pub const MAX_MESSAGE: usize = 4 << 20;

/// Longest wait for the next message of an import: a client that stalls gives its place in
/// the import queue up instead of holding it forever. The CLI sends chunks as fast as it
/// reads a local file.
const IMPORT_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// How an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The import stream passed the configured bound.
    #[error("import archive exceeds the limit of {limit} bytes ([images] max_import_bytes)")]
    TooLarge {
        /// The bound.
        limit: u64,
    },
    /// The import stream did not start with its header.
    #[error("import stream must start with a header")]
    NoHeader,
    /// A second header arrived.
    #[error("import stream has a second header after {received} bytes")]
    SecondHeader {
        /// Archive bytes received before it.
        received: u64,
    },
    /// The import stream held no archive bytes.
    #[error("import stream holds no archive")]
    Empty,
    /// The client sent nothing for [`IMPORT_IDLE`].
    #[error("import stream idle for {}s after {received} bytes", IMPORT_IDLE.as_secs())]
    Idle {
        /// Archive bytes received before it stalled.
        received: u64,
    },
    /// The client's stream failed (cancelled, reset, a message over the size limit).
    #[error("import stream failed after {received} bytes: {}", status.message())]
    Stream {
        /// Archive bytes received before it failed.
        received: u64,
        /// What tonic reported.
        status: Status,
    },
    /// The spool file could not be written.
    #[error("cannot spool the import archive to {path}: {source}", path = path.display())]
    Spool {
        /// The spool file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The request names no image.
    #[error("image is empty")]
    NoImage,
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Self {
        let code = match &e {
            AdminError::TooLarge { .. } => Code::ResourceExhausted,
            AdminError::NoHeader
            | AdminError::SecondHeader { .. }
            | AdminError::Empty
            | AdminError::NoImage => Code::InvalidArgument,
            AdminError::Idle { .. } => Code::DeadlineExceeded,
            AdminError::Stream { status, .. } => status.code(),
            AdminError::Spool { .. } => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// The admin service over one runtime.
#[derive(Clone)]
pub struct AdminService {
    rt: Arc<Runtime>,
    imports: Arc<tokio::sync::Semaphore>,
}

impl AdminService {
    /// Serves `rt`.
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self {
            rt,
            imports: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_IMPORTS)),
        }
    }

    /// The tonic service, with its message size bound.
    pub fn into_server(self) -> pb::admin_server::AdminServer<Self> {
        pb::admin_server::AdminServer::new(self).max_decoding_message_size(MAX_MESSAGE)
    }
}

/// Runs one admin call inside a span, logging its outcome. Calls fail with [`AdminError`]s
/// and runtime errors, both converted by `?` (the latter by the CRI's one conversion, so
/// both services give a store error the same code).
async fn call<T, F>(name: &'static str, what: &str, fut: F) -> Result<Response<T>, Status>
where
    F: Future<Output = Result<T, Status>>,
{
    let span = tracing::info_span!("admin", rpc = name, image = %what);
    async move {
        match fut.await {
            Ok(v) => {
                tracing::info!("done");
                Ok(Response::new(v))
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), error = %status.message(), "failed");
                Err(status)
            }
        }
    }
    .instrument(span)
    .await
}

fn to_pb(img: &Image) -> pb::Image {
    pb::Image {
        id: img.id.clone(),
        repo_tags: img.repo_tags.clone(),
        repo_digests: img.repo_digests.clone(),
        size: img.size,
    }
}

/// The next message of an import stream, `None` at its end.
async fn next<S>(
    stream: &mut S,
    received: u64,
) -> Result<Option<pb::ImportImageRequest>, AdminError>
where
    S: Stream<Item = Result<pb::ImportImageRequest, Status>> + Unpin,
{
    match tokio::time::timeout(IMPORT_IDLE, stream.next()).await {
        Err(_) => Err(AdminError::Idle { received }),
        Ok(next) => next
            .transpose()
            .map_err(|status| AdminError::Stream { received, status }),
    }
}

/// Receives the archive of an import stream into a spool file in `dir` (the store's temp
/// directory), enforcing `limit` on every chunk. Returns the name from the header and the
/// spool file, which is removed on any failure.
async fn spool<S>(
    dir: &Path,
    stream: &mut S,
    limit: u64,
) -> Result<(String, tempfile::TempPath), AdminError>
where
    S: Stream<Item = Result<pb::ImportImageRequest, Status>> + Unpin,
{
    let name = match next(stream, 0).await? {
        Some(pb::ImportImageRequest {
            part: Some(Part::Header(h)),
        }) => h.name,
        Some(_) => return Err(AdminError::NoHeader),
        None => return Err(AdminError::Empty),
    };
    let spool_err = |path: PathBuf| move |source| AdminError::Spool { path, source };
    let file = tempfile::Builder::new()
        .prefix("import-")
        .tempfile_in(dir)
        .map_err(spool_err(dir.to_path_buf()))?;
    let (file, path) = file.into_parts();
    let mut out = tokio::fs::File::from_std(file);
    let mut received = 0u64;
    while let Some(msg) = next(stream, received).await? {
        match msg.part {
            Some(Part::Chunk(chunk)) => {
                received = received.saturating_add(chunk.len() as u64);
                if received > limit {
                    return Err(AdminError::TooLarge { limit });
                }
                out.write_all(&chunk)
                    .await
                    .map_err(spool_err(path.to_path_buf()))?;
            }
            Some(Part::Header(_)) => return Err(AdminError::SecondHeader { received }),
            None => {}
        }
    }
    if received == 0 {
        return Err(AdminError::Empty);
    }
    out.flush().await.map_err(spool_err(path.to_path_buf()))?;
    Ok((name, path))
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn import_image(
        &self,
        r: Request<Streaming<pb::ImportImageRequest>>,
    ) -> Result<Response<pb::ImportImageResponse>, Status> {
        let rt = self.rt.clone();
        let imports = self.imports.clone();
        call("ImportImage", "", async move {
            let _permit = imports
                .acquire_owned()
                .await
                .expect("the import semaphore is never closed");
            let mut stream = r.into_inner();
            let (dir, limit) = rt.import_spool();
            let (name, path) = spool(&dir, &mut stream, limit).await?;
            tracing::debug!(spool = %path.display(), "archive received");
            // The import itself runs to completion (or rolls back) whatever the client does;
            // it owns the spool file and deletes it when done.
            let images = super::detached("ImportImage", "", async move {
                let name = (!name.is_empty()).then_some(name);
                let imported = rt.import_image(&path, name.as_deref()).await;
                drop(path);
                imported
            })
            .await?;
            Ok(pb::ImportImageResponse {
                images: images.iter().map(to_pb).collect(),
            })
        })
        .await
    }

    async fn list_images(
        &self,
        _r: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        call("ListImages", "", async {
            let images = self.rt.stored_images()?;
            Ok(pb::ListImagesResponse {
                images: images.iter().map(to_pb).collect(),
            })
        })
        .await
    }

    async fn remove_image(
        &self,
        r: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let image = r.into_inner().image;
        let what = image.clone();
        let rt = self.rt.clone();
        call("RemoveImage", &what, async move {
            if image.is_empty() {
                return Err(AdminError::NoImage.into());
            }
            super::detached("RemoveImage", &image.clone(), async move {
                rt.remove_image(&image).await
            })
            .await?;
            Ok(pb::RemoveImageResponse {})
        })
        .await
    }

    async fn pull_image(
        &self,
        r: Request<pb::PullImageRequest>,
    ) -> Result<Response<pb::PullImageResponse>, Status> {
        let r = r.into_inner();
        let what = r.image.clone();
        let rt = self.rt.clone();
        call("PullImage", &what, async move {
            if r.image.is_empty() {
                return Err(AdminError::NoImage.into());
            }
            let auth = PullAuth {
                username: r.username,
                password: r.password,
                ..Default::default()
            };
            let img = super::detached("PullImage", &r.image.clone(), async move {
                rt.pull_image_record(&r.image, &auth).await
            })
            .await?;
            Ok(pb::PullImageResponse {
                image: Some(to_pb(&img)),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One message of a client's import stream, as the server receives it.
    type Msg = Result<pb::ImportImageRequest, Status>;

    fn header() -> Msg {
        Ok(pb::ImportImageRequest {
            part: Some(Part::Header(pb::ImportHeader { name: "x".into() })),
        })
    }

    fn chunk(n: usize) -> Msg {
        Ok(pb::ImportImageRequest {
            part: Some(Part::Chunk(vec![1; n])),
        })
    }

    fn empty(dir: &Path) -> bool {
        std::fs::read_dir(dir).unwrap().next().is_none()
    }

    #[tokio::test]
    async fn a_stream_is_spooled_within_its_bound() {
        let d = tempfile::tempdir().unwrap();
        let mut s = tokio_stream::iter(vec![header(), chunk(3), chunk(5)]);
        let (name, path) = spool(d.path(), &mut s, 8).await.unwrap();
        assert_eq!(name, "x");
        assert_eq!(std::fs::read(&path).unwrap(), vec![1; 8]);
        drop(path);
        assert!(empty(d.path()));
    }

    #[tokio::test]
    async fn refused_streams_leave_no_spool_file() {
        let d = tempfile::tempdir().unwrap();
        let cases: Vec<(Vec<Msg>, Code, &str)> = vec![
            (
                vec![header(), chunk(5), chunk(4)],
                Code::ResourceExhausted,
                "exceeds the limit of 8 bytes",
            ),
            (
                vec![chunk(1)],
                Code::InvalidArgument,
                "must start with a header",
            ),
            (
                vec![header(), chunk(2), header()],
                Code::InvalidArgument,
                "second header after 2 bytes",
            ),
            (vec![header()], Code::InvalidArgument, "holds no archive"),
            (vec![], Code::InvalidArgument, "holds no archive"),
            (
                vec![
                    header(),
                    chunk(2),
                    Err(Status::cancelled("client went away")),
                ],
                Code::Cancelled,
                "failed after 2 bytes: client went away",
            ),
        ];
        for (parts, code, message) in cases {
            let err = spool(d.path(), &mut tokio_stream::iter(parts), 8)
                .await
                .unwrap_err();
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{status:?}");
            assert!(status.message().contains(message), "{status:?}");
            assert!(empty(d.path()), "a spool file stayed after {status:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_client_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let mut s = tokio_stream::iter(vec![header(), chunk(3)]).chain(tokio_stream::pending());
        let err = spool(d.path(), &mut s, 8).await.unwrap_err();
        assert!(matches!(err, AdminError::Idle { received: 3 }), "{err:?}");
        assert_eq!(Status::from(err).code(), Code::DeadlineExceeded);
        assert!(empty(d.path()));
    }
}
