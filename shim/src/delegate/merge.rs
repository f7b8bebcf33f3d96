//! Merging the answers of wasmcri and its delegate into the one answer the kubelet sees.
//!
//! IDs are random 256-bit values, so the two sides never share one; should they, the local
//! object wins (the local store is the authority for what runs here) and nothing is listed
//! twice.

use std::collections::HashSet;

use cri::v1 as pb;
use tonic::{Code, Status};

use super::DelegateError;

/// The condition reporting the delegate's health (not one the kubelet acts on: Wasm pods
/// keep running when the delegate is down).
pub const DELEGATE_READY: &str = "DelegateReady";

fn by_id<T>(local: Vec<T>, remote: Vec<T>, id: fn(&T) -> &str) -> Vec<T> {
    let seen: HashSet<String> = local.iter().map(|x| id(x).to_owned()).collect();
    let mut all = local;
    all.extend(remote.into_iter().filter(|x| !seen.contains(id(x))));
    all
}

/// ListPodSandbox.
pub fn pods(
    l: pb::ListPodSandboxResponse,
    r: pb::ListPodSandboxResponse,
) -> pb::ListPodSandboxResponse {
    pb::ListPodSandboxResponse {
        items: by_id(l.items, r.items, |p| &p.id),
    }
}

/// ListContainers.
pub fn containers(
    l: pb::ListContainersResponse,
    r: pb::ListContainersResponse,
) -> pb::ListContainersResponse {
    pb::ListContainersResponse {
        containers: by_id(l.containers, r.containers, |c| &c.id),
    }
}

fn stats_id(s: &pb::ContainerStats) -> &str {
    s.attributes.as_ref().map_or("", |a| &a.id)
}

/// ListContainerStats.
pub fn container_stats(
    l: pb::ListContainerStatsResponse,
    r: pb::ListContainerStatsResponse,
) -> pb::ListContainerStatsResponse {
    pb::ListContainerStatsResponse {
        stats: by_id(l.stats, r.stats, stats_id),
    }
}

/// ListPodSandboxStats.
pub fn pod_stats(
    l: pb::ListPodSandboxStatsResponse,
    r: pb::ListPodSandboxStatsResponse,
) -> pb::ListPodSandboxStatsResponse {
    pb::ListPodSandboxStatsResponse {
        stats: by_id(l.stats, r.stats, |s| {
            s.attributes.as_ref().map_or("", |a| &a.id)
        }),
    }
}

/// ListImages: an image both sides hold (same ID) is listed once, with the names of both.
pub fn images(l: pb::ListImagesResponse, r: pb::ListImagesResponse) -> pb::ListImagesResponse {
    let mut all = l.images;
    for img in r.images {
        match all.iter_mut().find(|i| i.id == img.id) {
            Some(i) => {
                for t in img.repo_tags {
                    if !i.repo_tags.contains(&t) {
                        i.repo_tags.push(t);
                    }
                }
                for d in img.repo_digests {
                    if !i.repo_digests.contains(&d) {
                        i.repo_digests.push(d);
                    }
                }
            }
            None => all.push(img),
        }
    }
    pb::ListImagesResponse { images: all }
}

/// ImageFsInfo: both runtimes' filesystems, so image GC and eviction see the whole node.
pub fn image_fs(l: pb::ImageFsInfoResponse, r: pb::ImageFsInfoResponse) -> pb::ImageFsInfoResponse {
    pb::ImageFsInfoResponse {
        image_filesystems: [l.image_filesystems, r.image_filesystems].concat(),
        container_filesystems: [l.container_filesystems, r.container_filesystems].concat(),
    }
}

/// ListMetricDescriptors: one descriptor per name.
pub fn descriptors(
    l: pb::ListMetricDescriptorsResponse,
    r: pb::ListMetricDescriptorsResponse,
) -> pb::ListMetricDescriptorsResponse {
    pb::ListMetricDescriptorsResponse {
        descriptors: by_id(l.descriptors, r.descriptors, |d| &d.name),
    }
}

/// ListPodSandboxMetrics.
pub fn pod_metrics(
    l: pb::ListPodSandboxMetricsResponse,
    r: pb::ListPodSandboxMetricsResponse,
) -> pb::ListPodSandboxMetricsResponse {
    pb::ListPodSandboxMetricsResponse {
        pod_metrics: by_id(l.pod_metrics, r.pod_metrics, |m| &m.pod_sandbox_id),
    }
}

/// An RPC either side may not implement: both answers merged, one answer alone when the other
/// side does not implement it or the delegate is down, the local error when neither answers.
pub fn either<T: Default>(
    local: Result<T, Status>,
    remote: Result<T, DelegateError>,
    merge: fn(T, T) -> T,
) -> Result<T, Status> {
    match (local, remote) {
        (Ok(l), Ok(r)) => Ok(merge(l, r)),
        (Ok(l), Err(_)) => Ok(l),
        (Err(e), Ok(r)) if e.code() == Code::Unimplemented => Ok(r),
        (Err(e), _) => Err(e),
    }
}

fn condition(
    t: &str,
    status: bool,
    reason: impl Into<String>,
    message: impl Into<String>,
) -> pb::RuntimeCondition {
    pb::RuntimeCondition {
        r#type: t.to_owned(),
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

fn find<'a>(s: &'a pb::StatusResponse, t: &str) -> Option<&'a pb::RuntimeCondition> {
    s.status.as_ref()?.conditions.iter().find(|c| c.r#type == t)
}

/// Status: wasmcri's `RuntimeReady` (the Wasm runtime serves whatever the delegate does),
/// `NetworkReady` only when both sides have a network, [`DELEGATE_READY`] saying why the
/// delegate cannot run pods; the Wasm handlers from wasmcri and every other handler (the
/// default one included) with its features from the delegate; features both sides have.
pub fn status(
    local: pb::StatusResponse,
    remote: Result<pb::StatusResponse, DelegateError>,
    endpoint: &str,
    wasm_handlers: &[String],
) -> pb::StatusResponse {
    let mut conditions = local
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut info = local.info;
    let mut handlers: Vec<pb::RuntimeHandler> = local
        .runtime_handlers
        .into_iter()
        .filter(|h| wasm_handlers.contains(&h.name))
        .collect();
    let default_handler = || pb::RuntimeHandler {
        name: String::new(),
        features: Some(pb::RuntimeHandlerFeatures::default()),
    };
    let features;
    match remote {
        Ok(r) => {
            let ready = find(&r, "RuntimeReady");
            conditions.push(match ready {
                Some(c) if c.status => condition(DELEGATE_READY, true, "", ""),
                Some(c) => condition(
                    DELEGATE_READY,
                    false,
                    "DelegateNotReady",
                    format!("delegate runtime {endpoint}: {} {}", c.reason, c.message),
                ),
                None => condition(
                    DELEGATE_READY,
                    false,
                    "DelegateNotReady",
                    format!("delegate runtime {endpoint} reports no RuntimeReady condition"),
                ),
            });
            if let Some(net) = find(&r, "NetworkReady").filter(|c| !c.status)
                && let Some(mine) = conditions.iter_mut().find(|c| c.r#type == "NetworkReady")
                && mine.status
            {
                *mine = condition(
                    "NetworkReady",
                    false,
                    net.reason.clone(),
                    format!("delegate runtime {endpoint}: {}", net.message),
                );
            }
            let theirs: Vec<pb::RuntimeHandler> = r
                .runtime_handlers
                .into_iter()
                .filter(|h| !wasm_handlers.contains(&h.name))
                .collect();
            if !theirs.iter().any(|h| h.name.is_empty()) {
                handlers.insert(0, default_handler());
            }
            handlers.extend(theirs);
            for (k, v) in r.info {
                info.insert(format!("delegate.{k}"), v);
            }
            let (l, d) = (
                local.features.unwrap_or_default(),
                r.features.unwrap_or_default(),
            );
            features = pb::RuntimeFeatures {
                supplemental_groups_policy: l.supplemental_groups_policy
                    && d.supplemental_groups_policy,
                user_namespaces_host_network: l.user_namespaces_host_network
                    && d.user_namespaces_host_network,
            };
        }
        Err(e) => {
            conditions.push(condition(
                DELEGATE_READY,
                false,
                "DelegateUnavailable",
                e.to_string(),
            ));
            handlers.insert(0, default_handler());
            // What the delegate supports is unknown while it is away: promise nothing.
            features = pb::RuntimeFeatures::default();
        }
    }
    pb::StatusResponse {
        status: Some(pb::RuntimeStatus { conditions }),
        info,
        runtime_handlers: handlers,
        features: Some(features),
    }
}

fn driver_name(d: i32) -> &'static str {
    match pb::CgroupDriver::try_from(d) {
        Ok(pb::CgroupDriver::Systemd) => "systemd",
        Ok(pb::CgroupDriver::Cgroupfs) => "cgroupfs",
        Err(_) => "unknown",
    }
}

/// RuntimeConfig: wasmcri's, when the delegate's cgroup driver is the same (or the delegate
/// does not implement the RPC, as containerd 1.6 does not, or cannot be asked now); an error
/// when they differ, so the kubelet refuses to start rather than mix drivers on one node.
pub fn runtime_config(
    local: pb::RuntimeConfigResponse,
    remote: Result<pb::RuntimeConfigResponse, DelegateError>,
    endpoint: &str,
) -> Result<pb::RuntimeConfigResponse, Status> {
    let mine = local.linux.as_ref().map(|l| l.cgroup_driver);
    match remote {
        Ok(r) => {
            let theirs = r.linux.as_ref().map(|l| l.cgroup_driver);
            match (mine, theirs) {
                (Some(a), Some(b)) if a != b => Err(DelegateError::CgroupDriverMismatch {
                    local: driver_name(a),
                    delegate: driver_name(b),
                    endpoint: endpoint.to_owned(),
                }
                .into()),
                _ => Ok(local),
            }
        }
        Err(DelegateError::Remote { status, .. }) if status.code() == Code::Unimplemented => {
            Ok(local)
        }
        Err(e) => {
            tracing::warn!(error = %e, "RuntimeConfig: the delegate's cgroup driver is unknown");
            Ok(local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(id: &str) -> pb::PodSandbox {
        pb::PodSandbox {
            id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn lists_merge_without_duplicates() {
        let l = pb::ListPodSandboxResponse {
            items: vec![pod("a"), pod("b")],
        };
        let r = pb::ListPodSandboxResponse {
            items: vec![pod("c"), pod("a")],
        };
        let ids: Vec<String> = pods(l, r).items.into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn images_in_both_are_listed_once_with_all_names() {
        let img = |id: &str, tag: &str| pb::Image {
            id: id.into(),
            repo_tags: vec![tag.into()],
            ..Default::default()
        };
        let l = pb::ListImagesResponse {
            images: vec![img("x", "w:1")],
        };
        let r = pb::ListImagesResponse {
            images: vec![img("x", "l:1"), img("y", "l:2")],
        };
        let m = images(l, r).images;
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].repo_tags, ["w:1", "l:1"]);
    }

    fn local_status() -> pb::StatusResponse {
        let h = |n: &str| pb::RuntimeHandler {
            name: n.into(),
            features: Some(pb::RuntimeHandlerFeatures {
                recursive_read_only_mounts: true,
                user_namespaces: false,
            }),
        };
        pb::StatusResponse {
            status: Some(pb::RuntimeStatus {
                conditions: vec![
                    condition("RuntimeReady", true, "", ""),
                    condition("NetworkReady", true, "", ""),
                ],
            }),
            info: Default::default(),
            runtime_handlers: vec![h(""), h("wasmtime")],
            features: Some(pb::RuntimeFeatures {
                supplemental_groups_policy: true,
                user_namespaces_host_network: false,
            }),
        }
    }

    #[test]
    fn status_with_the_delegate_down() {
        let e = DelegateError::Unavailable {
            endpoint: "unix:///x.sock".into(),
            rpc: "Status",
            reason: "connection refused".into(),
        };
        let s = status(
            local_status(),
            Err(e),
            "unix:///x.sock",
            &["wasmtime".into()],
        );
        let c = &s.status.as_ref().unwrap().conditions;
        assert!(c.iter().any(|c| c.r#type == "RuntimeReady" && c.status));
        let d = c.iter().find(|c| c.r#type == DELEGATE_READY).unwrap();
        assert!(!d.status);
        assert_eq!(d.reason, "DelegateUnavailable");
        assert!(d.message.contains("unix:///x.sock"), "{}", d.message);
        let names: Vec<&str> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["", "wasmtime"]);
        assert!(!s.features.unwrap().supplemental_groups_policy);
    }

    #[test]
    fn status_with_the_delegate_up() {
        let remote = pb::StatusResponse {
            status: Some(pb::RuntimeStatus {
                conditions: vec![
                    condition("RuntimeReady", true, "", ""),
                    condition("NetworkReady", false, "NetworkPluginNotReady", "no conf"),
                ],
            }),
            runtime_handlers: vec![pb::RuntimeHandler {
                name: "runc".into(),
                features: Some(pb::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: true,
                }),
            }],
            ..Default::default()
        };
        let s = status(local_status(), Ok(remote), "e", &["wasmtime".into()]);
        let c = &s.status.as_ref().unwrap().conditions;
        let net = c.iter().find(|c| c.r#type == "NetworkReady").unwrap();
        assert!(!net.status);
        assert!(net.message.contains("no conf"));
        assert!(c.iter().any(|c| c.r#type == DELEGATE_READY && c.status));
        let names: Vec<&str> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["", "wasmtime", "runc"]);
        assert!(s.runtime_handlers[2].features.unwrap().user_namespaces);
    }

    #[test]
    fn cgroup_drivers_must_agree() {
        let cfg = |d: pb::CgroupDriver| pb::RuntimeConfigResponse {
            linux: Some(pb::LinuxRuntimeConfiguration {
                cgroup_driver: d as i32,
            }),
        };
        let fs = pb::CgroupDriver::Cgroupfs;
        assert!(runtime_config(cfg(fs), Ok(cfg(fs)), "e").is_ok());
        let e = runtime_config(
            cfg(fs),
            Ok(cfg(pb::CgroupDriver::Systemd)),
            "unix:///c.sock",
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("systemd") && e.message().contains("unix:///c.sock"));
        let unimpl = DelegateError::Remote {
            endpoint: "e".into(),
            status: Status::unimplemented("no"),
        };
        assert!(runtime_config(cfg(fs), Err(unimpl), "e").is_ok());
    }

    #[test]
    fn either_side_may_not_implement() {
        let m = |a: Vec<i32>, b: Vec<i32>| [a, b].concat();
        let down = || DelegateError::Timeout {
            endpoint: "e".into(),
            rpc: "x",
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(either(Ok(vec![1]), Ok(vec![2]), m).unwrap(), [1, 2]);
        assert_eq!(either(Ok(vec![1]), Err(down()), m).unwrap(), [1]);
        assert_eq!(
            either(Err(Status::unimplemented("x")), Ok(vec![2]), m).unwrap(),
            [2]
        );
        assert!(either::<Vec<i32>>(Err(Status::internal("x")), Ok(vec![2]), m).is_err());
    }
}
