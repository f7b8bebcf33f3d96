//! The user a container runs as: the pod's security context, else the image's `User`, looked
//! up in the image's own `/etc/passwd` and `/etc/group` (as containerd and CRI-O do).
//!
//! The files come from an image, so they are hostile input: found with
//! [`crate::images::resolve_in_root`] (symlinks followed chroot-style, never out of the
//! rootfs), opened without following a final link, and read at most [`MAX_FILE`] bytes.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest `/etc/passwd` or `/etc/group` read from an image. Real ones are a few KiB.
pub const MAX_FILE: u64 = 1 << 20;

/// How the pod's `supplemental_groups` combine with the image's groups of the user
/// (CRI `SupplementalGroupsPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupsPolicy {
    /// The groups the image's `/etc/group` gives the user, plus the pod's.
    #[default]
    Merge,
    /// Only the primary group and the pod's.
    Strict,
}

/// What the security context asks for; all empty means "the image's user".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRequest {
    /// `run_as_user`.
    pub uid: Option<u32>,
    /// `run_as_username`.
    pub username: Option<String>,
    /// `run_as_group`.
    pub gid: Option<u32>,
    /// `supplemental_groups`.
    pub supplemental_groups: Vec<u32>,
    /// `supplemental_groups_policy`.
    pub policy: GroupsPolicy,
}

/// The identity a container's processes get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups, the primary group first, without duplicates.
    pub additional_gids: Vec<u32>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// Resolves the credentials of a container whose image rootfs is `rootfs` and whose image
/// config says `User: image_user` (`user`, `uid`, `user:group`, `uid:gid`, or empty).
pub fn resolve(rootfs: &Path, image_user: &str, req: &UserRequest) -> Result<Credentials, String> {
    let passwd = || read_image_file(rootfs, "/etc/passwd").map(|t| parse_passwd(&t));
    let (uid, mut gid, mut name, group_spec) = if let Some(uid) = req.uid {
        let entry = passwd()?.into_iter().find(|e| e.uid == uid);
        (
            uid,
            entry.as_ref().map_or(0, |e| e.gid),
            entry.map(|e| e.name),
            None,
        )
    } else if let Some(user) = &req.username {
        let entry = passwd()?
            .into_iter()
            .find(|e| &e.name == user)
            .ok_or_else(|| format!("user {user:?} is not in the image's /etc/passwd"))?;
        (entry.uid, entry.gid, Some(entry.name), None)
    } else {
        let (user, group) = match image_user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (image_user, None),
        };
        if user.is_empty() {
            (
                0,
                0,
                passwd()?.into_iter().find(|e| e.uid == 0).map(|e| e.name),
                group,
            )
        } else if let Ok(uid) = user.parse::<u32>() {
            let entry = passwd()?.into_iter().find(|e| e.uid == uid);
            (
                uid,
                entry.as_ref().map_or(0, |e| e.gid),
                entry.map(|e| e.name),
                group,
            )
        } else {
            let entry = passwd()?
                .into_iter()
                .find(|e| e.name == user)
                .ok_or_else(|| format!("image user {user:?} is not in the image's /etc/passwd"))?;
            (entry.uid, entry.gid, Some(entry.name), group)
        }
    };
    let groups = || read_image_file(rootfs, "/etc/group").map(|t| parse_group(&t));
    if let Some(g) = group_spec.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups()?
                .into_iter()
                .find(|(n, _, _)| n == g)
                .map(|(_, id, _)| id)
                .ok_or_else(|| format!("image group {g:?} is not in the image's /etc/group"))?,
        };
    }
    if let Some(g) = req.gid {
        gid = g;
    }
    let mut additional = vec![gid];
    if req.policy == GroupsPolicy::Merge
        && let Some(n) = name.take()
    {
        for (_, id, members) in groups()? {
            if members.contains(&n) {
                additional.push(id);
            }
        }
    }
    additional.extend(&req.supplemental_groups);
    let mut seen = std::collections::HashSet::new();
    additional.retain(|g| seen.insert(*g));
    Ok(Credentials {
        uid,
        gid,
        additional_gids: additional,
    })
}

/// The text of a file of the image, or empty if the image has none. Never leaves the rootfs,
/// never follows a final symlink, never reads more than [`MAX_FILE`].
fn read_image_file(rootfs: &Path, guest: &str) -> Result<String, String> {
    let Some(rel) = crate::images::resolve_in_root(rootfs, guest) else {
        return Ok(String::new());
    };
    let path = rootfs.join(rel);
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| format!("open {guest} of the image: {e}"))?;
    if !f.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err(format!("{guest} of the image is not a regular file"));
    }
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("read {guest} of the image: {e}"))?;
    if buf.len() as u64 > MAX_FILE {
        return Err(format!(
            "{guest} of the image is larger than {MAX_FILE} bytes"
        ));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `name:x:uid:gid:...` lines; malformed lines are skipped, as libc does.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: (*f.first()?).to_owned(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// `name:x:gid:member,member` lines.
fn parse_group(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Some(((*f.first()?).to_owned(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs(passwd: &str, group: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/passwd"), passwd).unwrap();
        fs::write(d.path().join("etc/group"), group).unwrap();
        d
    }

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nbad line\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nextra:x:2000:app,other\nstaff:x:50:other\n";

    fn creds(uid: u32, gid: u32, groups: &[u32]) -> Credentials {
        Credentials {
            uid,
            gid,
            additional_gids: groups.to_vec(),
        }
    }

    #[test]
    fn image_user_forms() {
        let d = rootfs(PASSWD, GROUP);
        let r = UserRequest::default();
        assert_eq!(resolve(d.path(), "", &r).unwrap(), creds(0, 0, &[0]));
        assert_eq!(
            resolve(d.path(), "app", &r).unwrap(),
            creds(1000, 1001, &[1001, 2000])
        );
        assert_eq!(
            resolve(d.path(), "1000", &r).unwrap(),
            creds(1000, 1001, &[1001, 2000])
        );
        assert_eq!(
            resolve(d.path(), "1000:staff", &r).unwrap(),
            creds(1000, 50, &[50, 2000])
        );
        assert_eq!(
            resolve(d.path(), "4242:7", &r).unwrap(),
            creds(4242, 7, &[7])
        );
        assert!(
            resolve(d.path(), "nobody", &r)
                .unwrap_err()
                .contains("nobody")
        );
        assert!(
            resolve(d.path(), "app:nogroup", &r)
                .unwrap_err()
                .contains("nogroup")
        );
    }

    #[test]
    fn security_context_wins_and_policies() {
        let d = rootfs(PASSWD, GROUP);
        let mut r = UserRequest {
            uid: Some(1000),
            supplemental_groups: vec![3000, 1001],
            ..Default::default()
        };
        assert_eq!(
            resolve(d.path(), "0", &r).unwrap(),
            creds(1000, 1001, &[1001, 2000, 3000])
        );
        r.policy = GroupsPolicy::Strict;
        assert_eq!(
            resolve(d.path(), "0", &r).unwrap(),
            creds(1000, 1001, &[1001, 3000])
        );
        r.gid = Some(5);
        assert_eq!(
            resolve(d.path(), "0", &r).unwrap(),
            creds(1000, 5, &[5, 3000, 1001])
        );
        let r = UserRequest {
            username: Some("app".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(d.path(), "", &r).unwrap(),
            creds(1000, 1001, &[1001, 2000])
        );
        let r = UserRequest {
            username: Some("ghost".into()),
            ..Default::default()
        };
        assert!(resolve(d.path(), "", &r).is_err());
    }

    #[test]
    fn images_without_user_files() {
        let d = tempfile::tempdir().unwrap();
        let r = UserRequest::default();
        assert_eq!(resolve(d.path(), "", &r).unwrap(), creds(0, 0, &[0]));
        assert_eq!(
            resolve(d.path(), "65532:65532", &r).unwrap(),
            creds(65532, 65532, &[65532])
        );
        assert!(resolve(d.path(), "app", &r).is_err());
    }

    #[test]
    fn hostile_user_files_stay_in_the_rootfs_and_bounded() {
        // A link out of the rootfs resolves inside it: the host's /etc/passwd is never read.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("passwd"), d.path().join("etc/passwd"))
            .unwrap();
        let r = UserRequest {
            username: Some("evil".into()),
            ..Default::default()
        };
        assert!(resolve(d.path(), "", &r).is_err());
        let rel = format!("../../../../../../..{}/passwd", outside.path().display());
        fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(&rel, d.path().join("etc/passwd")).unwrap();
        assert!(resolve(d.path(), "", &r).is_err());
        // A huge file is refused, not read whole.
        fs::remove_file(d.path().join("etc/passwd")).unwrap();
        let f = fs::File::create(d.path().join("etc/passwd")).unwrap();
        f.set_len(MAX_FILE * 64).unwrap();
        let e = resolve(d.path(), "", &r).unwrap_err();
        assert!(e.contains("larger"), "{e}");
        // A FIFO does not hang the daemon.
        fs::remove_file(d.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(&d.path().join("etc/passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(resolve(d.path(), "", &r).is_err());
    }
}
