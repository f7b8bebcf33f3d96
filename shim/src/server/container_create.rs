//! CreateContainer.

use std::sync::Arc;

use cri::v1 as pb;

use super::convert;
use crate::container::{ContainerSpec, ImageVolume, MountSpec};
use crate::runtime::{GroupsPolicy, NewContainer, Result, Runtime, RuntimeError, UserRequest};

/// CreateContainer.
pub async fn create(
    rt: &Arc<Runtime>,
    r: pb::CreateContainerRequest,
) -> Result<pb::CreateContainerResponse> {
    let cfg = r
        .config
        .ok_or_else(|| RuntimeError::InvalidArgument("container config is missing".into()))?;
    let md = cfg
        .metadata
        .ok_or_else(|| RuntimeError::InvalidArgument("container metadata is missing".into()))?;
    let image = cfg.image.map(|i| i.image).unwrap_or_default();
    if image.is_empty() {
        return Err(RuntimeError::InvalidArgument(
            "container image is empty".into(),
        ));
    }
    if !cfg.devices.is_empty() {
        return Err(RuntimeError::Unimplemented(
            "devices cannot be given to wasm containers".into(),
        ));
    }
    let linux = cfg.linux.unwrap_or_default();
    let res = linux.resources.unwrap_or_default();
    let resources = convert::resources(&res);
    crate::cgroups::check_cpusets(&resources)
        .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
    let sc = linux.security_context.unwrap_or_default();
    if !matches!(
        pb::Signal::try_from(cfg.stop_signal),
        Ok(pb::Signal::RuntimeDefault | pb::Signal::Sigterm)
    ) {
        return Err(RuntimeError::Unimplemented(format!(
            "stop signal {} is not supported: wasm guests are stopped with SIGTERM",
            pb::Signal::try_from(cfg.stop_signal)
                .map(|s| s.as_str_name().to_owned())
                .unwrap_or_else(|_| cfg.stop_signal.to_string())
        )));
    }
    let mut mounts = Vec::with_capacity(cfg.mounts.len());
    for m in cfg.mounts {
        if m.container_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(RuntimeError::InvalidArgument(format!(
                "mount container_path {:?} must be absolute",
                m.container_path
            )));
        }
        mounts.push(mount_spec(m)?);
    }
    let req = NewContainer {
        spec: ContainerSpec {
            pod_id: r.pod_sandbox_id,
            name: md.name,
            attempt: md.attempt,
            labels: cfg.labels,
            annotations: cfg.annotations,
            image,
            log_path: cfg.log_path,
            mounts,
            stdin: cfg.stdin,
            stdin_once: cfg.stdin_once,
            tty: cfg.tty,
            oom_score_adj: (res.oom_score_adj != 0).then_some(res.oom_score_adj),
            resources,
        },
        command: cfg.command,
        args: cfg.args,
        working_dir: cfg.working_dir,
        env: env(cfg.envs)?,
        user: user_request(&sc)?,
    };
    let id = rt.create_container(req).await?;
    Ok(pb::CreateContainerResponse { container_id: id })
}

/// One CRI mount in domain terms. An image volume (`image` set) is read-only by definition
/// and is resolved against the image store when the container is created.
fn mount_spec(m: pb::Mount) -> Result<MountSpec> {
    let image = m
        .image
        .map(|i| i.image)
        .filter(|i| !i.is_empty())
        .map(|reference| ImageVolume {
            reference,
            image_id: String::new(),
            sub_path: m.image_sub_path.clone(),
        });
    if image.is_none() && !m.image_sub_path.is_empty() {
        return Err(RuntimeError::InvalidArgument(format!(
            "mount {}: image_sub_path is set but image is not",
            m.container_path
        )));
    }
    let read_only = m.readonly || image.is_some();
    // wasmcri's read-only mounts are recursively read-only in the kernel already; asking
    // for it on a writable mount is the contradiction the CRI says to reject.
    if m.recursive_read_only && !read_only {
        return Err(RuntimeError::InvalidArgument(format!(
            "mount {}: recursive_read_only needs readonly",
            m.container_path
        )));
    }
    // As runc and containerd do: a recursively read-only tree cannot also receive mounts
    // propagated from the host (the CRI asks to reject the combination).
    if m.recursive_read_only && m.propagation != pb::MountPropagation::PropagationPrivate as i32 {
        return Err(RuntimeError::InvalidArgument(format!(
            "mount {}: recursive_read_only needs private propagation",
            m.container_path
        )));
    }
    Ok(MountSpec {
        container_path: m.container_path,
        host_path: m.host_path,
        read_only,
        image,
    })
}

/// Env values arrive as bytes (CRI v1.36). wasmtime's WASI context takes strings (and WASI
/// 0.2's `get-environment` is `list<tuple<string, string>>`), so a value that is not UTF-8 is
/// refused by name rather than passed on altered.
fn env(envs: Vec<pb::KeyValue>) -> Result<Vec<(String, String)>> {
    envs.into_iter()
        .map(|kv| match String::from_utf8(kv.value) {
            Ok(v) if !kv.key.contains('=') && !kv.key.contains('\0') && !v.contains('\0') => {
                Ok((kv.key, v))
            }
            Ok(_) => Err(RuntimeError::InvalidArgument(format!(
                "env var {:?}: names may not contain '=' or NUL, values not NUL",
                kv.key
            ))),
            Err(_) => Err(RuntimeError::InvalidArgument(format!(
                "env var {:?}: value is not valid UTF-8, which WASI environments require",
                kv.key
            ))),
        })
        .collect()
}

/// A uid or gid from the security context, which must fit Linux's 32-bit IDs (and not be
/// `-1`/4294967295, which means "unchanged" to the kernel).
fn id_value(what: &str, v: i64) -> Result<u32> {
    u32::try_from(v)
        .ok()
        .filter(|id| *id != u32::MAX)
        .ok_or_else(|| RuntimeError::InvalidArgument(format!("{what} {v} is not a valid ID")))
}

/// The user the security context asks for, checked as the CRI says.
fn user_request(sc: &pb::LinuxContainerSecurityContext) -> Result<UserRequest> {
    let uid = sc
        .run_as_user
        .map(|u| id_value("run_as_user", u.value))
        .transpose()?;
    let username = (!sc.run_as_username.is_empty()).then(|| sc.run_as_username.clone());
    if uid.is_some() && username.is_some() {
        return Err(RuntimeError::InvalidArgument(
            "run_as_user and run_as_username are mutually exclusive".into(),
        ));
    }
    let gid = sc
        .run_as_group
        .map(|g| id_value("run_as_group", g.value))
        .transpose()?;
    if gid.is_some() && uid.is_none() && username.is_none() {
        return Err(RuntimeError::InvalidArgument(
            "run_as_group is set without run_as_user or run_as_username".into(),
        ));
    }
    let supplemental_groups = sc
        .supplemental_groups
        .iter()
        .map(|g| id_value("supplemental group", *g))
        .collect::<Result<_>>()?;
    let policy = match pb::SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy) {
        Ok(pb::SupplementalGroupsPolicy::Merge) => GroupsPolicy::Merge,
        Ok(pb::SupplementalGroupsPolicy::Strict) => GroupsPolicy::Strict,
        Err(_) => {
            return Err(RuntimeError::InvalidArgument(format!(
                "unknown supplemental_groups_policy {}",
                sc.supplemental_groups_policy
            )));
        }
    };
    Ok(UserRequest {
        uid,
        username,
        gid,
        supplemental_groups,
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &[u8]) -> pb::KeyValue {
        pb::KeyValue {
            key: k.into(),
            value: v.to_vec(),
        }
    }

    #[test]
    fn env_must_be_utf8_and_well_formed() {
        assert_eq!(
            env(vec![kv("A", b"1"), kv("B", "é".as_bytes())]).unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "é".into())]
        );
        let e = env(vec![kv("SECRET", &[0xff, 0xfe])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SECRET") && e.contains("UTF-8"), "{e}");
        assert!(env(vec![kv("A=B", b"1")]).is_err());
        assert!(env(vec![kv("A", b"x\0y")]).is_err());
    }

    #[test]
    fn image_volumes_are_read_only_and_exclusive() {
        let m = mount_spec(pb::Mount {
            container_path: "/data".into(),
            image: Some(pb::ImageSpec {
                image: "sha256:abc".into(),
                ..Default::default()
            }),
            image_sub_path: "dir".into(),
            recursive_read_only: true,
            ..Default::default()
        })
        .unwrap();
        assert!(m.read_only);
        assert_eq!(
            m.image,
            Some(ImageVolume {
                reference: "sha256:abc".into(),
                image_id: String::new(),
                sub_path: "dir".into(),
            })
        );
        let plain = mount_spec(pb::Mount {
            container_path: "/data".into(),
            host_path: "/h".into(),
            ..Default::default()
        })
        .unwrap();
        assert!(!plain.read_only && plain.image.is_none());
        for bad in [
            pb::Mount {
                container_path: "/data".into(),
                host_path: "/h".into(),
                image_sub_path: "dir".into(),
                ..Default::default()
            },
            pb::Mount {
                container_path: "/data".into(),
                host_path: "/h".into(),
                recursive_read_only: true,
                ..Default::default()
            },
        ]
        .into_iter()
        .chain(
            [
                pb::MountPropagation::PropagationHostToContainer,
                pb::MountPropagation::PropagationBidirectional,
            ]
            .map(|p| pb::Mount {
                container_path: "/data".into(),
                host_path: "/h".into(),
                readonly: true,
                recursive_read_only: true,
                propagation: p as i32,
                ..Default::default()
            }),
        ) {
            assert!(matches!(
                mount_spec(bad),
                Err(RuntimeError::InvalidArgument(_))
            ));
        }
    }

    fn i64v(v: i64) -> Option<pb::Int64Value> {
        Some(pb::Int64Value { value: v })
    }

    #[test]
    fn security_context_users() {
        let mut sc = pb::LinuxContainerSecurityContext {
            run_as_user: i64v(1000),
            run_as_group: i64v(2000),
            supplemental_groups: vec![3000],
            supplemental_groups_policy: pb::SupplementalGroupsPolicy::Strict as i32,
            ..Default::default()
        };
        assert_eq!(
            user_request(&sc).unwrap(),
            UserRequest {
                uid: Some(1000),
                username: None,
                gid: Some(2000),
                supplemental_groups: vec![3000],
                policy: GroupsPolicy::Strict,
            }
        );
        sc.run_as_username = "app".into();
        assert!(user_request(&sc).is_err(), "user and username together");
        sc.run_as_user = None;
        assert!(user_request(&sc).is_ok());
        sc.run_as_username.clear();
        assert!(user_request(&sc).is_err(), "group without user");
        for bad in [-1, 1 << 32, u32::MAX as i64] {
            let sc = pb::LinuxContainerSecurityContext {
                run_as_user: i64v(bad),
                ..Default::default()
            };
            assert!(user_request(&sc).is_err(), "{bad}");
        }
        let sc = pb::LinuxContainerSecurityContext {
            supplemental_groups_policy: 7,
            ..Default::default()
        };
        assert!(user_request(&sc).is_err());
    }
}
