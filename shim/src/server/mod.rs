//! The gRPC edge: CRI `RuntimeService` and `ImageService`.
//!
//! The service impls below only dispatch: each RPC lives in its own module (named
//! resource_verb, as containerd's CRI plugin does), translates the request into one
//! [`crate::runtime`] call and the answer back. [`rpc`] wraps every handler with a tracing
//! span, start/failure logs and the single conversion of domain errors into gRPC statuses.

pub mod admin;
mod container_create;
mod container_events;
mod container_exec;
mod container_list;
mod container_log;
mod container_remove;
mod container_start;
mod container_stats;
mod container_status;
mod container_stop;
mod container_update;
mod convert;
mod image_fs_info;
mod image_list;
mod image_pull;
mod image_remove;
mod image_status;
pub(crate) mod list_stream;
mod metrics;
mod runtime_info;
mod sandbox_list;
mod sandbox_remove;
mod sandbox_run;
mod sandbox_status;
mod sandbox_stop;
mod sandbox_update;

use std::future::Future;
use std::sync::Arc;

use cri::v1 as pb;
use cri::v1::image_service_server::ImageService;
use cri::v1::runtime_service_server::RuntimeService;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::runtime::{Runtime, RuntimeError};
use list_stream::RpcStream;

/// The CRI server: both services over one runtime.
#[derive(Clone)]
pub struct Cri {
    rt: Arc<Runtime>,
    streaming: Option<Arc<crate::streaming::StreamingServer>>,
}

impl Cri {
    /// Serves `rt`.
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self {
            rt,
            streaming: None,
        }
    }

    /// Answers `Exec` and `PortForward` with URLs on `streaming`.
    pub fn with_streaming(mut self, streaming: Arc<crate::streaming::StreamingServer>) -> Self {
        self.streaming = Some(streaming);
        self
    }
}

/// Runs one RPC handler inside a span named after the RPC, logging failures, and converting
/// its error into a `tonic::Status`.
async fn rpc<T, F>(name: &'static str, id: &str, fut: F) -> Result<Response<T>, Status>
where
    F: Future<Output = Result<T, RuntimeError>>,
{
    let span = tracing::info_span!("cri", rpc = name, id = %id);
    async move {
        tracing::debug!("start");
        let t = std::time::Instant::now();
        match fut.await {
            Ok(v) => {
                tracing::debug!(us = t.elapsed().as_micros() as u64, "done");
                Ok(Response::new(v))
            }
            Err(e) => {
                let status = Status::from(e);
                if status.code() == Code::NotFound {
                    tracing::debug!(error = %status.message(), "failed");
                } else {
                    tracing::warn!(code = ?status.code(), error = %status.message(), "failed");
                }
                Err(status)
            }
        }
    }
    .instrument(span)
    .await
}

/// Runs a mutating RPC's domain call on a task of its own and waits for it. tonic drops a
/// handler's future when the client cancels or its deadline passes; a lifecycle step cut
/// off half-way (a runner started but never watched, a sandbox half set up) would leave an
/// object that can never be stopped or removed. Detached, the call completes or rolls back
/// whatever the client does, and the kubelet's retry finds the result.
/// A task that panicked is a bug, reported as INTERNAL with the RPC and the ID it was for.
async fn detached<T, F>(rpc: &'static str, id: &str, fut: F) -> Result<T, RuntimeError>
where
    F: Future<Output = Result<T, RuntimeError>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(fut.in_current_span())
        .await
        .map_err(RuntimeError::task(rpc, format!("{id:?}")))?
}

/// The gRPC code of each domain error. A wrapped module error is mapped by its own variant;
/// an error whose cleanup also failed keeps the code of its cause.
fn code_of(e: &RuntimeError) -> Code {
    use crate::runtime::ImageVolumeError;
    use crate::userns::UsernsError;
    match e {
        RuntimeError::NotFound { .. } => Code::NotFound,
        RuntimeError::Ambiguous { .. } | RuntimeError::InvalidArgument(_) => Code::InvalidArgument,
        RuntimeError::NameReserved { .. } => Code::AlreadyExists,
        // A full streaming URL cache is a transient overload; FAILED_PRECONDITION is what the
        // kubelet has always been told for it.
        RuntimeError::FailedPrecondition { .. }
        | RuntimeError::NoCgroups
        | RuntimeError::AttachUnavailable { .. }
        | RuntimeError::NoStreamingServer
        | RuntimeError::StreamingBusy { .. } => Code::FailedPrecondition,
        RuntimeError::DeadlineExceeded { .. } | RuntimeError::ExecTimedOut { .. } => {
            Code::DeadlineExceeded
        }
        RuntimeError::Unimplemented(_) => Code::Unimplemented,
        RuntimeError::Image(ie) => image_code(ie),
        RuntimeError::ImageVolume(v) => match v {
            ImageVolumeError::NotPresent { .. } | ImageVolumeError::SubPathMissing { .. } => {
                Code::NotFound
            }
            ImageVolumeError::HostPathAndImage { .. } | ImageVolumeError::SubPathEscapes { .. } => {
                Code::InvalidArgument
            }
        },
        // The request is at fault for a refused name or value, the node for the rest.
        RuntimeError::Sysctl(s) if s.is_invalid_argument() => Code::InvalidArgument,
        RuntimeError::Sysctl(_) => Code::FailedPrecondition,
        RuntimeError::Userns(UsernsError::Invalid { .. } | UsernsError::Unmapped { .. }) => {
            Code::InvalidArgument
        }
        RuntimeError::Userns(UsernsError::Os { .. }) => Code::FailedPrecondition,
        RuntimeError::Cgroup(_)
        | RuntimeError::Network(_)
        | RuntimeError::Store(_)
        | RuntimeError::Io { .. }
        | RuntimeError::TaskFailed { .. } => Code::Internal,
        RuntimeError::StartFailed { .. } => Code::Unknown,
        RuntimeError::CleanupFailed { error, .. } => code_of(error),
    }
}

/// The gRPC code of each image store error, as [`crate::images::ImageError`]'s docs list
/// them.
fn image_code(e: &crate::images::ImageError) -> Code {
    use crate::images::ImageError as I;
    match e {
        I::NotFound(_) => Code::NotFound,
        I::InvalidReference { .. }
        | I::Ambiguous { .. }
        | I::InvalidDigest { .. }
        | I::Config(_) => Code::InvalidArgument,
        I::Unauthorized { .. } => Code::PermissionDenied,
        // The content is bad or hostile: a retry will not help.
        I::DigestMismatch { .. } | I::HostileLayer { .. } | I::TooLarge { .. } => Code::DataLoss,
        I::UnsupportedMediaType { .. } | I::NoMatchingPlatform { .. } | I::Malformed { .. } => {
            Code::FailedPrecondition
        }
        I::Registry { .. } | I::Distribution { .. } | I::Busy(_) => Code::Unavailable,
        I::Io { .. } | I::Internal(_) => Code::Internal,
    }
}

impl From<RuntimeError> for Status {
    fn from(e: RuntimeError) -> Self {
        Status::new(code_of(&e), e.to_string())
    }
}

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not supported by wasmcri"
    )))
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(
        &self,
        r: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        rpc("Version", "", runtime_info::version(r.into_inner())).await
    }
    async fn run_pod_sandbox(
        &self,
        r: Request<pb::RunPodSandboxRequest>,
    ) -> Result<Response<pb::RunPodSandboxResponse>, Status> {
        let r = r.into_inner();
        let name = r
            .config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        rpc("RunPodSandbox", &name, {
            let rt = self.rt.clone();
            detached("RunPodSandbox", &name, async move {
                sandbox_run::run(&rt, r).await
            })
        })
        .await
    }
    async fn stop_pod_sandbox(
        &self,
        r: Request<pb::StopPodSandboxRequest>,
    ) -> Result<Response<pb::StopPodSandboxResponse>, Status> {
        let r = r.into_inner();
        let id = r.pod_sandbox_id.clone();
        rpc("StopPodSandbox", &id, {
            let rt = self.rt.clone();
            detached("StopPodSandbox", &id, async move {
                sandbox_stop::stop(&rt, r).await
            })
        })
        .await
    }
    async fn remove_pod_sandbox(
        &self,
        r: Request<pb::RemovePodSandboxRequest>,
    ) -> Result<Response<pb::RemovePodSandboxResponse>, Status> {
        let r = r.into_inner();
        let id = r.pod_sandbox_id.clone();
        rpc("RemovePodSandbox", &id, {
            let rt = self.rt.clone();
            detached("RemovePodSandbox", &id, async move {
                sandbox_remove::remove(&rt, r).await
            })
        })
        .await
    }
    async fn pod_sandbox_status(
        &self,
        r: Request<pb::PodSandboxStatusRequest>,
    ) -> Result<Response<pb::PodSandboxStatusResponse>, Status> {
        let r = r.into_inner();
        let id = r.pod_sandbox_id.clone();
        rpc("PodSandboxStatus", &id, sandbox_status::status(&self.rt, r)).await
    }
    async fn list_pod_sandbox(
        &self,
        r: Request<pb::ListPodSandboxRequest>,
    ) -> Result<Response<pb::ListPodSandboxResponse>, Status> {
        rpc(
            "ListPodSandbox",
            "",
            sandbox_list::list(&self.rt, r.into_inner()),
        )
        .await
    }
    async fn create_container(
        &self,
        r: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let r = r.into_inner();
        let id = r.pod_sandbox_id.clone();
        rpc("CreateContainer", &id, {
            let rt = self.rt.clone();
            detached("CreateContainer", &id, async move {
                container_create::create(&rt, r).await
            })
        })
        .await
    }
    async fn start_container(
        &self,
        r: Request<pb::StartContainerRequest>,
    ) -> Result<Response<pb::StartContainerResponse>, Status> {
        let r = r.into_inner();
        let id = r.container_id.clone();
        rpc("StartContainer", &id, {
            let rt = self.rt.clone();
            detached("StartContainer", &id, async move {
                container_start::start(&rt, r).await
            })
        })
        .await
    }
    async fn stop_container(
        &self,
        r: Request<pb::StopContainerRequest>,
    ) -> Result<Response<pb::StopContainerResponse>, Status> {
        let r = r.into_inner();
        let id = r.container_id.clone();
        rpc("StopContainer", &id, {
            let rt = self.rt.clone();
            detached("StopContainer", &id, async move {
                container_stop::stop(&rt, r).await
            })
        })
        .await
    }
    async fn remove_container(
        &self,
        r: Request<pb::RemoveContainerRequest>,
    ) -> Result<Response<pb::RemoveContainerResponse>, Status> {
        let r = r.into_inner();
        let id = r.container_id.clone();
        rpc("RemoveContainer", &id, {
            let rt = self.rt.clone();
            detached("RemoveContainer", &id, async move {
                container_remove::remove(&rt, r).await
            })
        })
        .await
    }
    async fn list_containers(
        &self,
        r: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        rpc(
            "ListContainers",
            "",
            container_list::list(&self.rt, r.into_inner()),
        )
        .await
    }
    async fn container_status(
        &self,
        r: Request<pb::ContainerStatusRequest>,
    ) -> Result<Response<pb::ContainerStatusResponse>, Status> {
        let r = r.into_inner();
        let id = r.container_id.clone();
        rpc(
            "ContainerStatus",
            &id,
            container_status::status(&self.rt, r),
        )
        .await
    }
    async fn update_container_resources(
        &self,
        r: Request<pb::UpdateContainerResourcesRequest>,
    ) -> Result<Response<pb::UpdateContainerResourcesResponse>, Status> {
        let r = r.into_inner();
        let id = r.container_id.clone();
        rpc("UpdateContainerResources", &id, {
            let rt = self.rt.clone();
            detached("UpdateContainerResources", &id, async move {
                container_update::update(&rt, r).await
            })
        })
        .await
    }
    async fn reopen_container_log(
        &self,
        r: Request<pb::ReopenContainerLogRequest>,
    ) -> Result<Response<pb::ReopenContainerLogResponse>, Status> {
        let r = r.into_inner();
        let id = r.container_id.clone();
        rpc(
            "ReopenContainerLog",
            &id,
            container_log::reopen(&self.rt, r),
        )
        .await
    }
    async fn exec_sync(
        &self,
        r: Request<pb::ExecSyncRequest>,
    ) -> Result<Response<pb::ExecSyncResponse>, Status> {
        let r = r.into_inner();
        let id = r.container_id.clone();
        rpc("ExecSync", &id, container_exec::exec_sync(&self.rt, r)).await
    }
    async fn exec(
        &self,
        r: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        let r = r.into_inner();
        let id = r.container_id.clone();
        let streaming = self.streaming.as_ref();
        rpc("Exec", &id, container_exec::exec(&self.rt, streaming, r)).await
    }
    async fn attach(
        &self,
        r: Request<pb::AttachRequest>,
    ) -> Result<Response<pb::AttachResponse>, Status> {
        let r = r.into_inner();
        let id = r.container_id.clone();
        let streaming = self.streaming.as_ref();
        rpc(
            "Attach",
            &id,
            container_exec::attach(&self.rt, streaming, r),
        )
        .await
    }
    async fn port_forward(
        &self,
        r: Request<pb::PortForwardRequest>,
    ) -> Result<Response<pb::PortForwardResponse>, Status> {
        let r = r.into_inner();
        let id = r.pod_sandbox_id.clone();
        let streaming = self.streaming.as_ref();
        rpc(
            "PortForward",
            &id,
            container_exec::port_forward(&self.rt, streaming, r),
        )
        .await
    }
    async fn container_stats(
        &self,
        r: Request<pb::ContainerStatsRequest>,
    ) -> Result<Response<pb::ContainerStatsResponse>, Status> {
        let r = r.into_inner();
        let id = r.container_id.clone();
        rpc("ContainerStats", &id, container_stats::stats(&self.rt, r)).await
    }
    async fn list_container_stats(
        &self,
        r: Request<pb::ListContainerStatsRequest>,
    ) -> Result<Response<pb::ListContainerStatsResponse>, Status> {
        rpc(
            "ListContainerStats",
            "",
            container_stats::list(&self.rt, r.into_inner()),
        )
        .await
    }
    async fn pod_sandbox_stats(
        &self,
        r: Request<pb::PodSandboxStatsRequest>,
    ) -> Result<Response<pb::PodSandboxStatsResponse>, Status> {
        let r = r.into_inner();
        let id = r.pod_sandbox_id.clone();
        rpc(
            "PodSandboxStats",
            &id,
            container_stats::pod_stats(&self.rt, r),
        )
        .await
    }
    async fn list_pod_sandbox_stats(
        &self,
        r: Request<pb::ListPodSandboxStatsRequest>,
    ) -> Result<Response<pb::ListPodSandboxStatsResponse>, Status> {
        rpc(
            "ListPodSandboxStats",
            "",
            container_stats::list_pods(&self.rt, r.into_inner()),
        )
        .await
    }
    async fn update_runtime_config(
        &self,
        r: Request<pb::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<pb::UpdateRuntimeConfigResponse>, Status> {
        rpc(
            "UpdateRuntimeConfig",
            "",
            runtime_info::update_config(&self.rt, r.into_inner()),
        )
        .await
    }
    async fn status(
        &self,
        r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        rpc("Status", "", runtime_info::status(&self.rt, r.into_inner())).await
    }
    async fn checkpoint_container(
        &self,
        _r: Request<pb::CheckpointContainerRequest>,
    ) -> Result<Response<pb::CheckpointContainerResponse>, Status> {
        unimplemented("CheckpointContainer")
    }
    type GetContainerEventsStream = RpcStream<pb::ContainerEventResponse>;
    async fn get_container_events(
        &self,
        r: Request<pb::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        rpc(
            "GetContainerEvents",
            "",
            container_events::events(&self.rt, r.into_inner()),
        )
        .await
    }
    async fn list_metric_descriptors(
        &self,
        r: Request<pb::ListMetricDescriptorsRequest>,
    ) -> Result<Response<pb::ListMetricDescriptorsResponse>, Status> {
        rpc(
            "ListMetricDescriptors",
            "",
            metrics::descriptors(r.into_inner()),
        )
        .await
    }
    async fn list_pod_sandbox_metrics(
        &self,
        r: Request<pb::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<pb::ListPodSandboxMetricsResponse>, Status> {
        rpc(
            "ListPodSandboxMetrics",
            "",
            metrics::list(&self.rt, r.into_inner()),
        )
        .await
    }
    type StreamPodSandboxesStream = RpcStream<pb::StreamPodSandboxesResponse>;
    async fn stream_pod_sandboxes(
        &self,
        r: Request<pb::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        rpc(
            "StreamPodSandboxes",
            "",
            list_stream::pods(&self.rt, r.into_inner()),
        )
        .await
    }
    type StreamContainersStream = RpcStream<pb::StreamContainersResponse>;
    async fn stream_containers(
        &self,
        r: Request<pb::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        rpc(
            "StreamContainers",
            "",
            list_stream::containers(&self.rt, r.into_inner()),
        )
        .await
    }
    type StreamContainerStatsStream = RpcStream<pb::StreamContainerStatsResponse>;
    async fn stream_container_stats(
        &self,
        r: Request<pb::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        rpc(
            "StreamContainerStats",
            "",
            list_stream::container_stats(&self.rt, r.into_inner()),
        )
        .await
    }
    type StreamPodSandboxStatsStream = RpcStream<pb::StreamPodSandboxStatsResponse>;
    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<pb::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        rpc(
            "StreamPodSandboxStats",
            "",
            list_stream::pod_stats(&self.rt, r.into_inner()),
        )
        .await
    }
    type StreamPodSandboxMetricsStream = RpcStream<pb::StreamPodSandboxMetricsResponse>;
    async fn stream_pod_sandbox_metrics(
        &self,
        r: Request<pb::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        rpc(
            "StreamPodSandboxMetrics",
            "",
            metrics::stream(&self.rt, r.into_inner()),
        )
        .await
    }
    async fn update_pod_sandbox_resources(
        &self,
        r: Request<pb::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<pb::UpdatePodSandboxResourcesResponse>, Status> {
        let r = r.into_inner();
        let id = r.pod_sandbox_id.clone();
        rpc("UpdatePodSandboxResources", &id, {
            let rt = self.rt.clone();
            detached("UpdatePodSandboxResources", &id, async move {
                sandbox_update::update(&rt, r).await
            })
        })
        .await
    }
    async fn runtime_config(
        &self,
        r: Request<pb::RuntimeConfigRequest>,
    ) -> Result<Response<pb::RuntimeConfigResponse>, Status> {
        rpc(
            "RuntimeConfig",
            "",
            runtime_info::runtime_config(&self.rt, r.into_inner()),
        )
        .await
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        r: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        rpc("ListImages", "", image_list::list(&self.rt, r.into_inner())).await
    }
    async fn image_status(
        &self,
        r: Request<pb::ImageStatusRequest>,
    ) -> Result<Response<pb::ImageStatusResponse>, Status> {
        let r = r.into_inner();
        let id = r
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        rpc("ImageStatus", &id, image_status::status(&self.rt, r)).await
    }
    async fn pull_image(
        &self,
        r: Request<pb::PullImageRequest>,
    ) -> Result<Response<pb::PullImageResponse>, Status> {
        let r = r.into_inner();
        let id = r
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        rpc("PullImage", &id, {
            let rt = self.rt.clone();
            detached(
                "PullImage",
                &id,
                async move { image_pull::pull(&rt, r).await },
            )
        })
        .await
    }
    async fn remove_image(
        &self,
        r: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let r = r.into_inner();
        let id = r
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        rpc("RemoveImage", &id, {
            let rt = self.rt.clone();
            detached("RemoveImage", &id, async move {
                image_remove::remove(&rt, r).await
            })
        })
        .await
    }
    type StreamImagesStream = RpcStream<pb::StreamImagesResponse>;
    async fn stream_images(
        &self,
        r: Request<pb::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        rpc(
            "StreamImages",
            "",
            list_stream::images(&self.rt, r.into_inner()),
        )
        .await
    }
    async fn image_fs_info(
        &self,
        r: Request<pb::ImageFsInfoRequest>,
    ) -> Result<Response<pb::ImageFsInfoResponse>, Status> {
        rpc(
            "ImageFsInfo",
            "",
            image_fs_info::info(&self.rt, r.into_inner()),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ImageVolumeError;

    #[test]
    fn codes_per_variant() {
        let cases: Vec<(RuntimeError, Code)> = vec![
            (
                RuntimeError::NotFound {
                    kind: "container",
                    id: "x".into(),
                },
                Code::NotFound,
            ),
            (
                RuntimeError::Ambiguous {
                    kind: "container",
                    prefix: "a".into(),
                },
                Code::InvalidArgument,
            ),
            (
                RuntimeError::NameReserved {
                    kind: "pod sandbox",
                    name: "n".into(),
                    holder: "h".into(),
                },
                Code::AlreadyExists,
            ),
            (
                RuntimeError::InvalidArgument("x".into()),
                Code::InvalidArgument,
            ),
            (
                RuntimeError::precondition("container", "c", "is not running"),
                Code::FailedPrecondition,
            ),
            (
                RuntimeError::deadline("container", "c", "did not exit"),
                Code::DeadlineExceeded,
            ),
            (
                RuntimeError::ExecTimedOut {
                    id: "c".into(),
                    seconds: 5,
                },
                Code::DeadlineExceeded,
            ),
            (RuntimeError::NoCgroups, Code::FailedPrecondition),
            (RuntimeError::NoStreamingServer, Code::FailedPrecondition),
            (
                RuntimeError::StreamingBusy {
                    kind: "container",
                    id: "c".into(),
                    source: crate::streaming::CacheFull,
                },
                Code::FailedPrecondition,
            ),
            (
                RuntimeError::AttachUnavailable {
                    id: "c".into(),
                    path: "/run/attach".into(),
                    source: std::io::Error::other("e"),
                },
                Code::FailedPrecondition,
            ),
            (
                crate::network::sysctl::SysctlError::Invalid {
                    name: "kernel.core_pattern".into(),
                    reason: "not namespaced".into(),
                }
                .into(),
                Code::InvalidArgument,
            ),
            (
                crate::userns::UsernsError::Unmapped {
                    which: "uid",
                    id: 70000,
                }
                .into(),
                Code::InvalidArgument,
            ),
            (
                crate::userns::UsernsError::Os {
                    path: "/run/userns/p".into(),
                    op: "mount",
                    source: std::io::Error::other("e"),
                }
                .into(),
                Code::FailedPrecondition,
            ),
            (RuntimeError::Unimplemented("x".into()), Code::Unimplemented),
            (
                ImageVolumeError::NotPresent {
                    container_path: "/v".into(),
                    reference: "r".into(),
                }
                .into(),
                Code::NotFound,
            ),
            (
                ImageVolumeError::SubPathMissing {
                    container_path: "/v".into(),
                    sub_path: "s".into(),
                    image_id: "i".into(),
                }
                .into(),
                Code::NotFound,
            ),
            (
                ImageVolumeError::SubPathEscapes {
                    container_path: "/v".into(),
                    sub_path: "..".into(),
                }
                .into(),
                Code::InvalidArgument,
            ),
            (
                ImageVolumeError::HostPathAndImage {
                    container_path: "/v".into(),
                    host_path: "/h".into(),
                }
                .into(),
                Code::InvalidArgument,
            ),
            (
                RuntimeError::StartFailed {
                    id: "i".into(),
                    message: "m".into(),
                },
                Code::Unknown,
            ),
            (
                RuntimeError::Io {
                    what: "w".into(),
                    source: std::io::Error::other("e"),
                },
                Code::Internal,
            ),
            (
                RuntimeError::CleanupFailed {
                    error: Box::new(RuntimeError::NotFound {
                        kind: "image",
                        id: "i".into(),
                    }),
                    cleanup: vec![RuntimeError::Unimplemented("c".into())],
                },
                Code::NotFound,
            ),
        ];
        for (e, want) in cases {
            let msg = e.to_string();
            let s = Status::from(e);
            assert_eq!(s.code(), want, "{msg}");
            assert_eq!(s.message(), msg);
        }
    }

    /// One value of every image store error, named as its variant.
    fn every_image_error() -> Vec<(&'static str, crate::images::ImageError)> {
        use crate::images::ImageError as I;
        let s = String::new;
        vec![
            ("NotFound", I::NotFound(s())),
            (
                "Ambiguous",
                I::Ambiguous {
                    reference: s(),
                    candidates: vec![],
                },
            ),
            (
                "InvalidReference",
                I::InvalidReference {
                    reference: s(),
                    reason: s(),
                },
            ),
            (
                "DigestMismatch",
                I::DigestMismatch {
                    what: s(),
                    expected: s(),
                    actual: s(),
                },
            ),
            (
                "InvalidDigest",
                I::InvalidDigest {
                    digest: s(),
                    reason: s(),
                },
            ),
            ("HostileLayer", I::hostile("e", "r")),
            (
                "UnsupportedMediaType",
                I::UnsupportedMediaType {
                    media_type: s(),
                    what: s(),
                },
            ),
            (
                "NoMatchingPlatform",
                I::NoMatchingPlatform {
                    reference: s(),
                    offered: vec![],
                },
            ),
            ("Malformed", I::malformed("w", "r")),
            (
                "Unauthorized",
                I::Unauthorized {
                    reference: s(),
                    reason: s(),
                },
            ),
            (
                "Registry",
                I::Registry {
                    reference: s(),
                    source: Arc::new(oci_client::errors::OciDistributionError::GenericError(None)),
                },
            ),
            (
                "Distribution",
                I::Distribution {
                    reference: s(),
                    source: Arc::new(
                        crate::images::distribution::DistributionError::HttpsRequired { host: s() },
                    ),
                },
            ),
            ("Config", I::Config(s())),
            (
                "TooLarge",
                I::TooLarge {
                    what: s(),
                    limit: 1,
                },
            ),
            ("Io", I::io("/p", std::io::Error::other("e"))),
            (
                "Busy",
                I::Busy(crate::images::lock::StoreBusy {
                    root: "/r".into(),
                    holder: None,
                }),
            ),
            ("Internal", I::Internal(s())),
        ]
    }

    /// The codes `images/error.rs` documents, by variant, read from its module docs.
    fn documented_image_codes() -> std::collections::HashMap<String, Code> {
        let src = include_str!("../images/error.rs");
        let paragraph: String = src
            .lines()
            .map_while(|l| l.strip_prefix("//!"))
            .skip_while(|l| !l.contains("gRPC codes"))
            .take_while(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let mut codes = std::collections::HashMap::new();
        for entry in paragraph.split(';') {
            let (names, code) = entry.split_once('→').expect("`Variant` → CODE");
            let code = match code
                .split_whitespace()
                .next()
                .map(|c| c.trim_end_matches('.'))
            {
                Some("NOT_FOUND") => Code::NotFound,
                Some("INVALID_ARGUMENT") => Code::InvalidArgument,
                Some("PERMISSION_DENIED") => Code::PermissionDenied,
                Some("DATA_LOSS") => Code::DataLoss,
                Some("FAILED_PRECONDITION") => Code::FailedPrecondition,
                Some("UNAVAILABLE") => Code::Unavailable,
                Some("INTERNAL") => Code::Internal,
                other => panic!("unknown code {other:?} in {entry:?}"),
            };
            // Variant names: the backticked identifiers (not the paths the prose cites).
            for name in names.split('`').skip(1).step_by(2) {
                if name.starts_with(|c: char| c.is_ascii_uppercase())
                    && name.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    codes.insert(name.to_owned(), code);
                }
            }
        }
        codes
    }

    #[test]
    fn image_errors_map_as_documented_also_when_nested() {
        let documented = documented_image_codes();
        let all = every_image_error();
        assert_eq!(documented.len(), all.len(), "{documented:?}");
        for (name, e) in all {
            let want = documented[name];
            assert_eq!(image_code(&e), want, "{name}");
            // Inside a runtime error, and as the cause next to a failed cleanup.
            let msg = e.to_string();
            let nested = RuntimeError::CleanupFailed {
                error: Box::new(RuntimeError::Image(e)),
                cleanup: vec![
                    RuntimeError::io("remove /c")(std::io::Error::other("busy")),
                    RuntimeError::NoCgroups,
                ],
            };
            let s = Status::from(nested);
            assert_eq!(s.code(), want, "{name}");
            assert_eq!(
                s.message(),
                format!(
                    "{msg}; cleanup also failed: remove /c: busy; no cgroups on this host: no stats"
                ),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn a_panicked_task_is_internal_and_names_its_rpc_and_id() {
        let r: Result<(), RuntimeError> = detached("StopContainer", "c1", async {
            panic!("deliberate test panic");
        })
        .await;
        let e = r.unwrap_err();
        assert!(matches!(e, RuntimeError::TaskFailed { .. }), "{e}");
        let s = Status::from(e);
        assert_eq!(s.code(), Code::Internal);
        assert!(
            s.message().contains("StopContainer of \"c1\""),
            "{}",
            s.message()
        );
        // A cleanup that panicked next to a cause keeps the cause's code.
        let join = tokio::spawn(async { panic!("deliberate test panic") })
            .await
            .unwrap_err();
        let e = RuntimeError::CleanupFailed {
            error: Box::new(RuntimeError::not_running("c1")),
            cleanup: vec![RuntimeError::task(
                "remove network namespace",
                "pod sandbox p",
            )(join)],
        };
        let s = Status::from(e);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(
            s.message().starts_with("container c1 is not running; cleanup also failed: remove network namespace of pod sandbox p: task failed"),
            "{}",
            s.message()
        );
    }
}
