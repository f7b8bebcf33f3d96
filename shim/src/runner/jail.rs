//! The runner's filesystem view: a private mount namespace whose root is a small read-only
//! tmpfs holding only what this runner needs, each at its host path, so no path in the spec
//! changes meaning and nothing else on the host is reachable by path.
//!
//! What the jail holds ([`plan`]):
//! - every preopen directory, bind-mounted; read-only ones recursively read-only
//!   (`mount_setattr(AT_RECURSIVE)`), so read-only holds in the kernel, not only in WASI's
//!   permission checks, and all the way down through submounts;
//! - every file-mount directory ([`Preopen::files`]) as a fresh tmpfs holding one placeholder
//!   per file with the host file bind-mounted onto it, read-only where the kubelet asked:
//!   a read-only `/etc/hosts` next to a writable file in the same guest directory stays
//!   read-only, and nothing is ever written into a host directory the guest could reach;
//! - the `.wasm` and its precompiled artifact, read-only; the CRI log's and the exit record's
//!   directories, writable;
//! - `/dev/null`, `/dev/zero`, `/dev/urandom`, `/dev/random`;
//! - the pod's `/etc/resolv.conf` and `/etc/hosts`, read-only, and an `/etc/nsswitch.conf`
//!   saying `files dns`, so name lookups by the runner on the guest's behalf (WASI sockets'
//!   `resolve-addresses`, wasi:http's outgoing requests) use the pod's DNS, not the node's.
//!
//! Mount propagation from the namespace is off (`MS_PRIVATE` on the whole tree, before
//! anything is mounted), so nothing the runner mounts is seen by the host, and everything
//! disappears with the runner's last process.
//!
//! # Two halves
//! [`prepare`] does what does not depend on the spec, before the spec is read (a standby
//! runner while it idles): keep descriptors to the host's mount namespace, root and working
//! directory, `unshare(CLONE_NEWNS)`, make the tree private, mount the jail's root tmpfs
//! with the devices and `nsswitch.conf`, `pivot_root` into it and detach the old root. The
//! detach is the expensive part: the kernel waits for an RCU grace period before it
//! returns (2.7 ms of a start on a loaded 2-core VM).
//!
//! Once the spec is here, [`Prepared::to_host`] goes back to the host's namespace, where the
//! runner joins its cgroups and network namespace by path as the daemon sees them, and
//! [`Prepared::enter`] completes the jail: each source is resolved inside the host's root
//! with no magic links followed, cloned with `open_tree(OPEN_TREE_CLONE)` (a mount can only
//! be cloned in the namespace it is mounted in, hence the trip back: the copy made by
//! `unshare` is private and would miss what the host mounted since, such as a new pod's
//! volumes), made private, nosuid and read-only all the way down with one `mount_setattr`
//! on the detached tree, and moved into the jail after `setns` back into its namespace.
//! Every descriptor to the host is closed before the runner opens the log and drops
//! privileges, and so before any guest code runs.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::{RunMode, RunnerSpec};

/// Device nodes a guest's runtime may need (`/dev/null` for detached stdio; the others for
/// libraries that read randomness or zeroes by path).
const DEVICES: [&str; 4] = ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"];

/// The name-service configuration written into the jail: files (`/etc/hosts`), then DNS.
const NSSWITCH: &str = "hosts: files dns\n";

/// Where [`NSSWITCH`] goes.
const NSSWITCH_PATH: &str = "/etc/nsswitch.conf";

/// Mount flags of the runner's own tmpfs.
const TMPFS_FLAGS: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// What is mounted at one path in the jail.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    /// A host directory, bind-mounted with its submounts.
    Dir(PathBuf),
    /// A host file (or device node), bind-mounted.
    File(PathBuf),
    /// An empty tmpfs for placeholders; made read-only once every file is bound into it.
    Tmpfs,
    /// A file with these contents, written into the jail's own tmpfs.
    Contents(&'static str),
}

/// One entry of the jail, mounted in the order of [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// Absolute path, the same inside the jail as on the host.
    pub(crate) target: PathBuf,
    pub(crate) source: Source,
    pub(crate) read_only: bool,
}

/// The jail for `spec`, in mount order: parents before the paths inside them (so a tmpfs
/// for file mounts comes before its placeholders).
pub(crate) fn plan(spec: &RunnerSpec) -> Result<Vec<Entry>, String> {
    let mut by_target: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    let mut add = |e: Entry| -> Result<(), String> {
        let target = normal_absolute(&e.target)?;
        match by_target.get_mut(&target) {
            // The same path twice (the wasm inside the rootfs listed again, two preopens of
            // one directory): one mount, read-only if either asks.
            Some(prev) if prev.source == e.source => {
                prev.read_only |= e.read_only;
                Ok(())
            }
            Some(prev) => Err(format!(
                "{} is needed as both {:?} and {:?}",
                target.display(),
                prev.source,
                e.source
            )),
            None => {
                by_target.insert(target.clone(), Entry { target, ..e });
                Ok(())
            }
        }
    };
    for p in &spec.preopens {
        if p.files.is_empty() {
            add(Entry {
                target: p.host.clone(),
                source: Source::Dir(p.host.clone()),
                read_only: p.read_only,
            })?;
            continue;
        }
        add(Entry {
            target: p.host.clone(),
            source: Source::Tmpfs,
            read_only: true,
        })?;
        for f in &p.files {
            if !is_plain_name(&f.name) {
                return Err(format!("invalid file-mount name {:?}", f.name));
            }
            add(Entry {
                target: p.host.join(&f.name),
                source: Source::File(f.source.clone()),
                read_only: f.read_only,
            })?;
        }
    }
    add(file_ro(&spec.wasm))?;
    if let Some(p) = &spec.precompiled {
        add(file_ro(p))?;
    }
    let writable_dir = |p: &Path| Entry {
        target: p.to_owned(),
        source: Source::Dir(p.to_owned()),
        read_only: false,
    };
    if !matches!(spec.mode, RunMode::Exec { .. })
        && let Some(dir) = spec.log_path.as_deref().and_then(Path::parent)
    {
        add(writable_dir(dir))?;
    }
    if let Some(dir) = spec
        .exit_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        add(writable_dir(dir))?;
    }
    for dev in DEVICES {
        add(Entry {
            target: dev.into(),
            source: Source::File(dev.into()),
            read_only: false,
        })?;
    }
    for (target, source) in [
        ("/etc/resolv.conf", &spec.resolv_conf),
        ("/etc/hosts", &spec.hosts),
    ] {
        if let Some(source) = source {
            add(Entry {
                target: target.into(),
                source: Source::File(source.clone()),
                read_only: true,
            })?;
        }
    }
    add(Entry {
        target: NSSWITCH_PATH.into(),
        source: Source::Contents(NSSWITCH),
        read_only: true,
    })?;
    Ok(by_target.into_values().collect())
}

fn file_ro(p: &Path) -> Entry {
    Entry {
        target: p.to_owned(),
        source: Source::File(p.to_owned()),
        read_only: true,
    }
}

/// `p` as an absolute path of plain components (no `.`, `..`); the jail's mount points are
/// created by walking these components.
fn normal_absolute(p: &Path) -> Result<PathBuf, String> {
    if !p.is_absolute() {
        return Err(format!("{} is not an absolute path", p.display()));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            _ => return Err(format!("{} is not a normalised path", p.display())),
        }
    }
    Ok(out)
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// Where the jail's root tmpfs is mounted in the runner's private copy of the host's tree
/// before `pivot_root` makes it `/`: any directory every host has; nothing of the host's
/// `/tmp` is reachable through it (the tmpfs covers it, and the old root is detached).
const JAIL_MOUNT: &str = "/tmp";

/// The spec-independent half of the jail, made by [`prepare`] before the spec is known (a
/// standby runner does it while it idles): a private mount namespace whose root is the
/// jail's tmpfs holding the [`DEVICES`] and `/etc/nsswitch.conf`, with the host's old root
/// already detached — the detach waits for an RCU grace period (about 3 ms on a loaded
/// 2-core VM), which is why it happens here and not on the start path.
///
/// The host stays reachable only through these descriptors, all close-on-exec, and all
/// closed by [`Prepared::enter`] before any guest code runs: the host's mount namespace,
/// root and working directory, to go back to the host's view for the host-side work of
/// a start ([`Prepared::to_host`]); the jail's namespace and root, to come back.
pub(crate) struct Prepared {
    host_ns: OwnedFd,
    host_root: OwnedFd,
    host_cwd: OwnedFd,
    jail_ns: OwnedFd,
    jail_root: OwnedFd,
}

/// Enters a private mount namespace and makes its root the jail's tmpfs with what every
/// jail holds ([`Prepared`]), then stays there. Needs CAP_SYS_ADMIN. On failure the process
/// is back in the host's namespace, root and working directory; if even that fails it exits
/// with [`super::EXIT_FAILURE`] (it would be stranded in a half-built namespace).
pub(crate) fn prepare() -> Result<Prepared, String> {
    let host_root = open_path(Path::new("/")).map_err(|e| format!("open /: {e}"))?;
    let host_cwd = open_path(Path::new(".")).map_err(|e| format!("open .: {e}"))?;
    let host_ns = open_ns().map_err(|e| format!("open the host's mount namespace: {e}"))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare mount namespace: {e}"))?;
    match build_root() {
        Ok((jail_ns, jail_root)) => Ok(Prepared {
            host_ns,
            host_root,
            host_cwd,
            jail_ns,
            jail_root,
        }),
        Err(e) => {
            if let Err(back) = return_to(&host_ns, &host_root, &host_cwd) {
                eprintln!("runner: {e}; cannot return to the host's mount namespace: {back}");
                std::process::exit(super::EXIT_FAILURE);
            }
            Err(e)
        }
    }
}

/// In the fresh namespace: private propagation, the jail's tmpfs with the devices and
/// `nsswitch.conf`, `pivot_root` into it and the old root detached. Returns the namespace
/// and the jail's root.
fn build_root() -> Result<(OwnedFd, OwnedFd), String> {
    let _umask = ExactModes::new();
    // Before anything is mounted: nothing below propagates to (or from) the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make mounts private: {e}"))?;
    let jail_ns = open_ns().map_err(|e| format!("open the jail's mount namespace: {e}"))?;
    let jail = Path::new(JAIL_MOUNT);
    mount(
        Some("tmpfs"),
        jail,
        Some("tmpfs"),
        TMPFS_FLAGS,
        Some("mode=0755,size=1m,nr_inodes=4k"),
    )
    .map_err(|e| format!("mount jail tmpfs on {JAIL_MOUNT}: {e}"))?;
    for dev in DEVICES {
        let dev = Path::new(dev);
        make_mount_point(jail, dev, false, false)
            .map_err(|e| format!("jail mount point {}: {e}", dev.display()))?;
        bind(dev, &in_jail(jail, dev), false, false)
            .map_err(|e| format!("bind {} into the jail: {e}", dev.display()))?;
    }
    write_new(&in_jail(jail, Path::new(NSSWITCH_PATH)), NSSWITCH)
        .map_err(|e| format!("write {NSSWITCH_PATH}: {e}"))?;
    pivot_into(jail)?;
    let root = open_path(Path::new("/")).map_err(|e| format!("open the jail's root: {e}"))?;
    Ok((jail_ns, root))
}

impl Prepared {
    /// Back to the host's mount namespace, root and working directory, for the host-side
    /// part of a start (reading the spec file, the debug log, cgroups, netns): every host
    /// path then means what it means to the daemon. Needs a single-threaded process.
    pub(crate) fn to_host(&self) -> Result<(), String> {
        return_to(&self.host_ns, &self.host_root, &self.host_cwd)
    }

    /// Completes the jail for `spec` and enters it; called in the host's namespace (after
    /// [`Prepared::to_host`]). Each host source is resolved inside the host's root
    /// (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`), cloned with its submounts
    /// (`open_tree(OPEN_TREE_CLONE)`, which only works in the namespace the source is
    /// mounted in), made private, nosuid and, where asked, read-only all the way down with
    /// one `mount_setattr` on the detached tree; then the process goes back into the jail's
    /// namespace and moves the trees to their places. Every descriptor to the host is closed
    /// on return. On failure the process is left in the host's namespace, so the exit
    /// record can still be written.
    pub(crate) fn enter(self, spec: &RunnerSpec) -> Result<(), String> {
        let r = self.complete(spec);
        if r.is_err()
            && let Err(e) = self.to_host()
        {
            eprintln!("runner: cannot return to the host's mount namespace: {e}");
        }
        r
    }

    fn complete(&self, spec: &RunnerSpec) -> Result<(), String> {
        let _umask = ExactModes::new();
        let entries = plan(spec)?;
        let steps = steps(&entries);
        let mut trees = Vec::new();
        for (e, step) in entries.iter().zip(&steps) {
            if let (Step::Attach { .. }, Source::Dir(src) | Source::File(src)) = (step, &e.source) {
                let recursive = matches!(e.source, Source::Dir(_));
                trees.push(
                    clone_tree(&self.host_root, src, e.read_only, recursive)
                        .map_err(|err| format!("bind {} into the jail: {err}", src.display()))?,
                );
            }
        }
        setns(&self.jail_ns, CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("enter the jail's mount namespace: {e}"))?;
        let root = Path::new("/");
        let mut trees = trees.into_iter();
        let mut tmpfs: Vec<&Path> = Vec::new();
        for (e, step) in entries.iter().zip(&steps) {
            match (step, &e.source) {
                (Step::Skip, _) => {}
                (Step::Write, Source::Contents(text)) => write_new(&e.target, text)
                    .map_err(|err| format!("write {}: {err}", e.target.display()))?,
                (Step::Tmpfs, _) => {
                    make_mount_point(root, &e.target, true, false)
                        .map_err(|err| format!("jail mount point {}: {err}", e.target.display()))?;
                    mount(
                        Some("tmpfs"),
                        &e.target,
                        Some("tmpfs"),
                        TMPFS_FLAGS,
                        Some("mode=0755,size=64k,nr_inodes=1k"),
                    )
                    .map_err(|err| format!("mount tmpfs on {}: {err}", e.target.display()))?;
                    tmpfs.push(&e.target);
                }
                (Step::Attach { nested }, source) => {
                    let tree = trees.next().expect("one tree per attach step");
                    let is_dir = matches!(source, Source::Dir(_));
                    make_mount_point(root, &e.target, is_dir, *nested)
                        .map_err(|err| format!("jail mount point {}: {err}", e.target.display()))?;
                    attach(&tree, &e.target)
                        .map_err(|err| format!("attach {}: {err}", e.target.display()))?;
                    if e.target == root {
                        // A host directory on the jail's root: the process's root does not
                        // follow a mount stacked on it, so move the root onto the tree.
                        nix::unistd::fchdir(&tree)
                            .and_then(|()| nix::unistd::chroot("."))
                            .map_err(|err| format!("enter the tree on /: {err}"))?;
                    }
                }
                (Step::Write, _) => unreachable!("only contents are written"),
            }
        }
        // Placeholders are in place: the tmpfs themselves become read-only (the files bound
        // onto them keep their own mode), and so does the jail's root.
        for t in tmpfs {
            set_attr(libc::AT_FDCWD, t, libc::MOUNT_ATTR_RDONLY, 0, false)
                .map_err(|err| format!("make {} read-only: {err}", t.display()))?;
        }
        set_attr(
            self.jail_root.as_raw_fd(),
            Path::new(""),
            libc::MOUNT_ATTR_RDONLY,
            0,
            false,
        )
        .map_err(|err| format!("make the jail's root read-only: {err}"))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
    }
}

/// What [`Prepared::enter`] does with one entry of the [`plan`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// Nothing: already in the jail ([`prepare`] made it), or a path bound onto itself
    /// inside a bind of its own directory that is already read-only or writable as asked,
    /// or contents below a host directory (the host's own file is what the guest's node
    /// sees).
    Skip,
    /// Write the contents into the runner's own tmpfs.
    Write,
    /// A fresh tmpfs for file-mount placeholders.
    Tmpfs,
    /// Clone the host source and attach it; `nested` when the target lies in a host
    /// directory attached earlier, where nothing may be created.
    Attach { nested: bool },
}

/// The step for each entry of `entries` (in [`plan`] order).
fn steps(entries: &[Entry]) -> Vec<Step> {
    // What is mounted so far, and whether it is a host directory (below which nothing may
    // be created) or one of the runner's own tmpfs.
    let mut mounted: Vec<(&Path, &Source, bool)> = Vec::new();
    let mut steps = Vec::with_capacity(entries.len());
    for e in entries {
        let parent = mounted
            .iter()
            .rev()
            .find(|(t, _, _)| e.target.starts_with(t) && *t != e.target);
        let nested = matches!(parent, Some((_, Source::Dir(_), _)));
        let step = match (&e.source, parent) {
            (Source::Dir(src) | Source::File(src), Some((_, Source::Dir(_), parent_ro)))
                if *src == e.target && *parent_ro == e.read_only =>
            {
                Step::Skip
            }
            (Source::Contents(_), _) if nested => Step::Skip,
            // On the jail's own root: made by `prepare`.
            (Source::Contents(_), None) => Step::Skip,
            (Source::File(src), None) if DEVICES.iter().any(|d| Path::new(d) == src) => Step::Skip,
            (Source::Contents(_), Some(_)) => Step::Write,
            (Source::Tmpfs, _) => Step::Tmpfs,
            (Source::Dir(_) | Source::File(_), _) => Step::Attach { nested },
        };
        if matches!(step, Step::Tmpfs | Step::Attach { .. }) {
            mounted.push((&e.target, &e.source, e.read_only));
        }
        steps.push(step);
    }
    steps
}

/// `open_tree_attr(2)` (Linux 6.15): `open_tree` and `mount_setattr` of the copy in one
/// call. Not in `libc` for every architecture yet; system calls from 424 on have one number
/// everywhere.
pub(crate) const SYS_OPEN_TREE_ATTR: libc::c_long = 467;

/// A detached copy of the host's `src` (with its submounts when `recursive`), resolved
/// inside `host_root` with no magic links followed, made private (nothing mounted on or
/// under it propagates to or from the host), nosuid and, when `read_only`, read-only all
/// the way down. One `open_tree_attr` where the kernel has it, else `open_tree` and
/// `mount_setattr`.
fn clone_tree(
    host_root: &OwnedFd,
    src: &Path,
    read_only: bool,
    recursive: bool,
) -> io::Result<OwnedFd> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(host_root, src, how).map_err(io::Error::from)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    let mut set = libc::MOUNT_ATTR_NOSUID;
    if read_only {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: `fd` is an open descriptor, "" a NUL-terminated path and `attr` a fully
    // initialised `mount_attr` whose size is passed along; the call returns a new
    // descriptor (or -1), owned from here.
    let tree = unsafe {
        libc::syscall(
            SYS_OPEN_TREE_ATTR,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if tree >= 0 {
        // SAFETY: a descriptor open_tree_attr just returned, owned by nothing else.
        return Ok(unsafe { OwnedFd::from_raw_fd(tree as RawFd) });
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // SAFETY: as above, without the attributes.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor open_tree just returned, owned by nothing else.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };
    set_attr(
        tree.as_raw_fd(),
        Path::new(""),
        set,
        libc::MS_PRIVATE,
        recursive,
    )?;
    Ok(tree)
}

/// Moves the detached `tree` onto `target` (not following a final symbolic link).
fn attach(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let c = CString::new(target.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `tree` is an open descriptor, both paths NUL-terminated; the kernel only reads
    // them for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `setns` into `ns` (a mount namespace), then root and working directory back to `root`
/// and `cwd` (`setns` sets both to the namespace's root).
fn return_to(ns: &OwnedFd, root: &OwnedFd, cwd: &OwnedFd) -> Result<(), String> {
    setns(ns, CloneFlags::CLONE_NEWNS).map_err(|e| format!("setns: {e}"))?;
    nix::unistd::fchdir(root)
        .and_then(|()| nix::unistd::chroot("."))
        .and_then(|()| nix::unistd::fchdir(cwd))
        .map_err(|e| format!("restore root and working directory: {e}"))
}

/// While alive, the process's umask is 0, so what the jail creates gets exactly the modes
/// given: a runner inherits the daemon's umask, which may be anything (the daemon narrows
/// it to 0177 while it binds its socket), and a root runner without `CAP_DAC_OVERRIDE`
/// could not traverse a `0600` directory of its own jail. Restores the umask when dropped.
struct ExactModes(nix::sys::stat::Mode);

impl ExactModes {
    fn new() -> Self {
        Self(nix::sys::stat::umask(nix::sys::stat::Mode::empty()))
    }
}

impl Drop for ExactModes {
    fn drop(&mut self) {
        nix::sys::stat::umask(self.0);
    }
}

/// An `O_PATH` descriptor for `p`.
fn open_path(p: &Path) -> io::Result<OwnedFd> {
    Ok(fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(p)?
        .into())
}

/// This process's mount namespace.
fn open_ns() -> io::Result<OwnedFd> {
    Ok(fs::File::open("/proc/self/ns/mnt")?.into())
}

/// Creates `path` (and its missing parents) in the jail's tmpfs with `text` in it.
fn write_new(path: &Path, text: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    io::Write::write_all(&mut f, text.as_bytes())
}

/// `target` under the jail's root.
fn in_jail(jail: &Path, target: &Path) -> PathBuf {
    jail.join(target.strip_prefix("/").unwrap_or(target))
}

/// Creates the mount point for `target` in the jail. Inside the jail's own tmpfs every
/// missing component is created (nothing there is a link: the runner made all of it). A
/// target below an earlier bind mount lies in a host directory: nothing is created there;
/// the path must already exist, reached without following any link.
fn make_mount_point(jail: &Path, target: &Path, is_dir: bool, nested: bool) -> io::Result<()> {
    let path = in_jail(jail, target);
    if nested {
        let mut p = jail.to_path_buf();
        for c in target.components().skip(1) {
            p.push(c);
            if fs::symlink_metadata(&p)?.file_type().is_symlink() {
                return Err(io::Error::other("is reached through a symbolic link"));
            }
        }
        let meta = fs::symlink_metadata(&path)?;
        return if meta.is_dir() == is_dir {
            Ok(())
        } else {
            Err(io::Error::other("exists with another file type"))
        };
    }
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    if is_dir {
        match fs::DirBuilder::new().mode(0o755).create(&path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map(drop)
    }
}

/// Bind-mounts `src` at `dst` (with its submounts when `recursive`), then applies read-only
/// (when asked) together with nosuid to the whole subtree.
fn bind(src: &Path, dst: &Path, read_only: bool, recursive: bool) -> Result<(), String> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(src), dst, None::<&str>, flags, None::<&str>).map_err(|e| e.to_string())?;
    let mut set = libc::MOUNT_ATTR_NOSUID;
    if read_only {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    set_attr(libc::AT_FDCWD, dst, set, 0, recursive)
        .map_err(|e| format!("set mount attributes: {e}"))
}

/// `mount_setattr(2)` on `path` relative to `dirfd` (`""`: the mount `dirfd` is) and, if
/// `recursive`, every mount below it: sets the `set` attributes and, unless 0, the
/// `propagation` type. The only way to make a bind mount's submounts read-only too, which
/// `MS_REMOUNT` cannot (Linux 5.12+).
fn set_attr(
    dirfd: RawFd,
    path: &Path,
    set: u64,
    propagation: u64,
    recursive: bool,
) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation,
        userns_fd: 0,
    };
    let mut flags = libc::AT_SYMLINK_NOFOLLOW;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    if path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: `c` is a NUL-terminated path and `attr` a fully initialised `mount_attr` whose
    // size is passed along; the kernel only reads both for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            c.as_ptr(),
            flags as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `jail` the root: `pivot_root(".", ".")` stacks the old root on the new one, and
/// detaching it leaves only the jail.
fn pivot_into(jail: &Path) -> Result<(), String> {
    nix::unistd::chdir(jail).map_err(|e| format!("chdir {}: {e}", jail.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{FileBind, Preopen};

    fn spec() -> RunnerSpec {
        RunnerSpec {
            container_id: "c".repeat(64),
            mode: RunMode::Command,
            wasm: "/img/rootfs/app.wasm".into(),
            precompiled: None,
            args: vec!["app".into()],
            env: vec![],
            cwd: "/".into(),
            preopens: vec![],
            log_path: None,
            exit_file: "/c/exit/exit.json".into(),
            cgroup: None,
            netns: None,
            uid: None,
            gid: None,
            additional_gids: vec![],
            stdin: false,
            stdio: Default::default(),
            oom_score_adj: None,
            stop_grace_ms: None,
            debug_log: None,
            jail: Some("/c/jail".into()),
            resolv_conf: None,
            hosts: None,
            userns: None,
        }
    }

    #[test]
    fn plan_holds_only_what_the_runner_needs_in_mount_order() {
        let mut s = spec();
        s.wasm = "/img/rootfs/app.wasm".into();
        s.precompiled = Some("/cache/app.cwasm".into());
        s.preopens = vec![
            Preopen {
                host: "/img/rootfs".into(),
                guest: "/".into(),
                read_only: true,
                files: vec![],
            },
            Preopen {
                host: "/c/files/0".into(),
                guest: "/etc".into(),
                read_only: false,
                files: vec![
                    FileBind {
                        name: "hosts".into(),
                        source: "/k/etc-hosts".into(),
                        read_only: false,
                    },
                    FileBind {
                        name: "config".into(),
                        source: "/k/subpath".into(),
                        read_only: true,
                    },
                ],
            },
        ];
        s.exit_file = "/c/exit/exit.json".into();
        s.log_path = Some("/logs/pod/ctr/0.log".into());
        s.resolv_conf = Some("/p/etc/resolv.conf".into());
        let plan = plan(&s).unwrap();
        let got: Vec<(String, bool)> = plan
            .iter()
            .map(|e| (e.target.display().to_string(), e.read_only))
            .collect();
        let want: Vec<(&str, bool)> = vec![
            ("/c/exit", false),
            ("/c/files/0", true),
            ("/c/files/0/config", true),
            ("/c/files/0/hosts", false),
            ("/cache/app.cwasm", true),
            ("/dev/null", false),
            ("/dev/random", false),
            ("/dev/urandom", false),
            ("/dev/zero", false),
            ("/etc/nsswitch.conf", true),
            ("/etc/resolv.conf", true),
            ("/img/rootfs", true),
            ("/img/rootfs/app.wasm", true),
            ("/logs/pod/ctr", false),
        ];
        let want: Vec<(String, bool)> = want.into_iter().map(|(p, r)| (p.into(), r)).collect();
        assert_eq!(got, want);
        assert_eq!(plan[1].source, Source::Tmpfs);
        assert_eq!(plan[2].source, Source::File("/k/subpath".into()));
    }

    #[test]
    fn plan_rejects_traversal_and_odd_names() {
        let mut s = spec();
        s.preopens = vec![Preopen {
            host: "/c/files/0".into(),
            guest: "/etc".into(),
            read_only: true,
            files: vec![FileBind {
                name: "../../etc/shadow".into(),
                source: "/k/x".into(),
                read_only: true,
            }],
        }];
        assert!(plan(&s).unwrap_err().contains("invalid file-mount name"));
        let mut s = spec();
        s.wasm = "/img/../etc/app.wasm".into();
        assert!(plan(&s).unwrap_err().contains("not a normalised path"));
        let mut s = spec();
        s.wasm = "relative.wasm".into();
        assert!(plan(&s).unwrap_err().contains("not an absolute path"));
    }

    #[test]
    fn one_path_needed_two_ways_is_refused_and_duplicates_merge_read_only() {
        let mut s = spec();
        s.preopens = vec![
            Preopen {
                host: "/data".into(),
                guest: "/a".into(),
                read_only: false,
                files: vec![],
            },
            Preopen {
                host: "/data".into(),
                guest: "/b".into(),
                read_only: true,
                files: vec![],
            },
        ];
        let p = plan(&s).unwrap();
        let data = p.iter().find(|e| e.target == Path::new("/data")).unwrap();
        assert!(data.read_only);
        s.wasm = "/data".into();
        assert!(plan(&s).unwrap_err().contains("needed as both"));
    }

    #[test]
    fn steps_skip_what_prepare_made_and_attach_the_rest() {
        let mut s = spec();
        s.preopens = vec![
            Preopen {
                host: "/img/rootfs".into(),
                guest: "/".into(),
                read_only: true,
                files: vec![],
            },
            Preopen {
                host: "/c/files/0".into(),
                guest: "/etc".into(),
                read_only: false,
                files: vec![FileBind {
                    name: "hosts".into(),
                    source: "/k/etc-hosts".into(),
                    read_only: false,
                }],
            },
        ];
        let entries = plan(&s).unwrap();
        let got: Vec<(String, Step)> = entries
            .iter()
            .zip(steps(&entries))
            .map(|(e, step)| (e.target.display().to_string(), step))
            .collect();
        let attach = Step::Attach { nested: false };
        let want = vec![
            ("/c/exit", attach),
            ("/c/files/0", Step::Tmpfs),
            ("/c/files/0/hosts", attach),
            ("/dev/null", Step::Skip),
            ("/dev/random", Step::Skip),
            ("/dev/urandom", Step::Skip),
            ("/dev/zero", Step::Skip),
            ("/etc/nsswitch.conf", Step::Skip),
            ("/img/rootfs", attach),
            // Inside the read-only rootfs already.
            ("/img/rootfs/app.wasm", Step::Skip),
        ];
        let want: Vec<(String, Step)> = want.into_iter().map(|(p, s)| (p.into(), s)).collect();
        assert_eq!(got, want);

        // A host directory on the jail's root hides what `prepare` made: the host's own
        // devices and files are what the runner sees; below it, what must be writable is
        // attached in place (it would be read-only otherwise) and what must be read-only
        // is already.
        s.preopens = vec![Preopen {
            host: "/".into(),
            guest: "/".into(),
            read_only: true,
            files: vec![],
        }];
        s.exit_file = "/c/exit/exit.json".into();
        let entries = plan(&s).unwrap();
        let steps = steps(&entries);
        for (e, step) in entries.iter().zip(&steps) {
            let want = match e.target.to_str().unwrap() {
                "/" => Step::Attach { nested: false },
                "/img/rootfs/app.wasm" | "/etc/nsswitch.conf" => Step::Skip,
                _ => Step::Attach { nested: true },
            };
            assert_eq!(*step, want, "{}", e.target.display());
        }
    }

    /// In a child process with a mount namespace of its own standing in for the host: the
    /// prepared jail sees what the host mounts after it was prepared (a volume of a pod
    /// created later), keeps read-only directories read-only all the way down, lets a
    /// read-write file next to a read-only one be written through to the host, and shows
    /// nothing else of the host, and none of its mounts propagate to the host even from a
    /// shared host mount. What the jail creates is traversable by a root runner
    /// without `CAP_DAC_OVERRIDE` whatever umask it inherited.
    #[test]
    fn prepared_jail_sees_later_host_mounts_and_keeps_read_only_recursive() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIP: needs root (mount namespaces)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        for sub in ["ro/sub", "rw", "exit", "files", "share"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        fs::write(d.join("secret"), "host only").unwrap();
        fs::write(d.join("k-hosts"), "127.0.0.1 localhost\n").unwrap();
        fs::write(d.join("k-config"), "original\n").unwrap();
        let mut s = spec();
        s.wasm = d.join("share/app.wasm");
        s.exit_file = d.join("exit/exit.json");
        s.preopens = vec![
            Preopen {
                host: d.join("ro"),
                guest: "/".into(),
                read_only: true,
                files: vec![],
            },
            Preopen {
                host: d.join("rw"),
                guest: "/data".into(),
                read_only: false,
                files: vec![],
            },
            Preopen {
                host: d.join("share"),
                guest: "/share".into(),
                read_only: false,
                files: vec![],
            },
            Preopen {
                host: d.join("files"),
                guest: "/etc".into(),
                read_only: false,
                files: vec![
                    FileBind {
                        name: "hosts".into(),
                        source: d.join("k-hosts"),
                        read_only: false,
                    },
                    FileBind {
                        name: "config".into(),
                        source: d.join("k-config"),
                        read_only: true,
                    },
                ],
            },
        ];
        let in_child = || -> Result<(), String> {
            unshare(CloneFlags::CLONE_NEWNS).map_err(|e| e.to_string())?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| e.to_string())?;
            // The umask a runner spawned while the daemon binds its socket inherits.
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
            let p = prepare()?;
            p.to_host()?;
            let late = d.join("ro/sub");
            mount(
                Some("tmpfs"),
                &late,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| format!("late mount: {e}"))?;
            fs::write(late.join("f"), "late").map_err(|e| e.to_string())?;
            // A host mount with shared propagation (as `/` is on systemd hosts) holding the
            // .wasm, which the jail binds read-only inside the writable copy of it: that
            // mount must not propagate back to the host.
            let share = d.join("share");
            mount(
                Some("tmpfs"),
                &share,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .and_then(|()| {
                mount(
                    None::<&str>,
                    &share,
                    None::<&str>,
                    MsFlags::MS_SHARED,
                    None::<&str>,
                )
            })
            .map_err(|e| format!("shared mount: {e}"))?;
            fs::write(share.join("app.wasm"), "").map_err(|e| e.to_string())?;
            // Opened in the host's namespace: it keeps listing that namespace's mounts.
            let mut host_mounts =
                fs::File::open("/proc/self/mountinfo").map_err(|e| e.to_string())?;
            let count = |f: &mut fs::File| -> Result<usize, String> {
                let mut text = String::new();
                io::Seek::rewind(f)
                    .and_then(|_| io::Read::read_to_string(f, &mut text))
                    .map_err(|e| e.to_string())?;
                Ok(text.lines().count())
            };
            let before = count(&mut host_mounts)?;
            p.enter(&s)?;
            let after = count(&mut host_mounts)?;
            if after != before {
                return Err(format!("{} mounts propagated to the host", after - before));
            }
            // As a root guest's runner: no capability to override file modes.
            for cap in [
                caps::Capability::CAP_DAC_OVERRIDE,
                caps::Capability::CAP_DAC_READ_SEARCH,
            ] {
                caps::drop(None, caps::CapSet::Effective, cap).map_err(|e| e.to_string())?;
            }
            let expect = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
            expect(
                fs::read_to_string(late.join("f")).is_ok_and(|t| t == "late"),
                "a host mount made after prepare is missing",
            )?;
            expect(
                fs::write(late.join("g"), "x")
                    .is_err_and(|e| e.raw_os_error() == Some(libc::EROFS)),
                "a mount below a read-only directory is writable",
            )?;
            expect(fs::write(d.join("rw/y"), "y").is_ok(), "read-write preopen")?;
            expect(
                fs::write(d.join("share/z"), "z").is_ok(),
                "read-write shared preopen",
            )?;
            expect(
                fs::write(d.join("share/app.wasm"), "x").is_err(),
                "the .wasm in a writable directory",
            )?;
            expect(
                fs::write(d.join("files/hosts"), "hostile").is_ok(),
                "read-write file mount",
            )?;
            expect(
                fs::write(d.join("files/config"), "hostile").is_err(),
                "read-only file mount next to a read-write one is writable",
            )?;
            expect(
                fs::write(d.join("files/new"), "x").is_err(),
                "file-mount tmpfs",
            )?;
            expect(!d.join("secret").exists(), "host file outside the jail")?;
            expect(!Path::new("/proc/self").exists(), "/proc")?;
            expect(
                fs::read_to_string(NSSWITCH_PATH).is_ok_and(|t| t == NSSWITCH),
                "nsswitch.conf",
            )?;
            expect(fs::write("/dev/null", "x").is_ok(), "/dev/null")?;
            expect(fs::write("/new", "x").is_err(), "writable jail root")
        };
        // SAFETY: the child only makes system calls, allocates (glibc's malloc is made
        // fork-safe by its atfork handlers) and leaves with `_exit`.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = match in_child() {
                    Ok(()) => 0,
                    Err(m) => {
                        eprintln!("child: {m}");
                        1
                    }
                };
                // SAFETY: ends the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
        assert_eq!(fs::read_to_string(d.join("rw/y")).unwrap(), "y");
        assert_eq!(fs::read_to_string(d.join("k-hosts")).unwrap(), "hostile");
        assert_eq!(
            fs::read_to_string(d.join("k-config")).unwrap(),
            "original\n"
        );
        assert!(!d.join("files/hosts").exists() && !d.join("ro/sub/f").exists());
    }
}
