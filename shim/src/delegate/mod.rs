//! Mixed nodes: wasmcri in front of a delegate CRI runtime (containerd) that runs every pod
//! that is not Wasm.
//!
//! [`Delegating`] is the kubelet's one `RuntimeService` + `ImageService`. It holds the local
//! service ([`Cri`]) and a [`remote::Remote`] client of the delegate's socket, and routes:
//!
//! - **RunPodSandbox** by `runtime_handler`: the configured Wasm handlers run here, every
//!   other handler (the default `""` included) in the delegate.
//! - **Every later RPC** by the owner of its pod or container ID. The local runtime's durable
//!   store is the authority: an ID (or unique prefix) it knows is local, any other is the
//!   delegate's. There being exactly two owners, this needs no ownership table of its own —
//!   nothing to persist, to rebuild after a restart of either side, or to disagree with the
//!   runtimes — and costs one in-memory map lookup per call.
//! - **Lists and stats** ([`merge`]): both sides with the filter applied by each, the
//!   delegate's part remembered so an outage never makes its pods vanish ([`remote`]).
//! - **Status** merges conditions and runtime handlers; **RuntimeConfig** refuses differing
//!   cgroup drivers; **GetContainerEvents** merges both streams ([`events`]).
//! - **Images** ([`images`]) by what the image is: Wasm pulls here, everything else there.
//!
//! A delegate that is down or slow fails only calls that need it, with `UNAVAILABLE` naming
//! its endpoint; Wasm pods keep working. Without a configured delegate this layer is not in
//! the path at all (see [`crate::daemon`]).
//!
//! Delegated lifecycle calls carry the kubelet's deadline on to the delegate and are not
//! detached: a cancelled call is cancelled at the delegate too, which then cleans up as it
//! does when the kubelet talks to it directly (the local ones stay detached, see
//! [`crate::server`]).

mod events;
mod images;
pub mod merge;
pub mod remote;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cri::v1 as pb;
use cri::v1::runtime_service_client::RuntimeServiceClient;
use cri::v1::runtime_service_server::RuntimeService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::runtime::{Runtime, RuntimeError};
use crate::server::Cri;
use crate::server::list_stream::{RpcStream, chunked};
use remote::{Remote, caller_timeout};

/// A failure of the delegation layer.
#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    /// The configured endpoint cannot be used.
    #[error("invalid delegate endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The delegate could not be reached (socket missing, connection refused or reset).
    #[error("delegate runtime {endpoint} is unavailable ({rpc}): {reason}")]
    Unavailable {
        /// The delegate's endpoint.
        endpoint: String,
        /// The RPC that needed it.
        rpc: &'static str,
        /// The transport's reason.
        reason: String,
    },
    /// The delegate did not answer in time.
    #[error("delegate runtime {endpoint} did not answer {rpc} within {after:?}")]
    Timeout {
        /// The delegate's endpoint.
        endpoint: String,
        /// The RPC.
        rpc: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// The delegate answered with an error: passed on with its code and message.
    #[error("{}", status.message())]
    Remote {
        /// The delegate's endpoint.
        endpoint: String,
        /// Its answer.
        status: Status,
    },
    /// A non-Wasm image was asked for in a Wasm pod.
    #[error(
        "image {image} is not a Wasm image: Linux containers in a Wasm pod (sandbox {pod}) are not supported yet; run it in a pod of its own without the Wasm runtime class"
    )]
    LinuxContainerInWasmPod {
        /// The container's image.
        image: String,
        /// The Wasm pod.
        pod: String,
    },
    /// The two runtimes would put pods in differently managed cgroups.
    #[error(
        "cgroup drivers differ: wasmcri uses {local}, the delegate {endpoint} uses {delegate}; configure both alike"
    )]
    CgroupDriverMismatch {
        /// wasmcri's driver.
        local: &'static str,
        /// The delegate's driver.
        delegate: &'static str,
        /// The delegate's endpoint.
        endpoint: String,
    },
}

impl DelegateError {
    /// Whether the delegate could not be asked at all (down, or too slow).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }
}

impl From<DelegateError> for Status {
    fn from(e: DelegateError) -> Self {
        let code = match &e {
            DelegateError::InvalidEndpoint { .. } => Code::InvalidArgument,
            DelegateError::Unavailable { .. } | DelegateError::Timeout { .. } => Code::Unavailable,
            DelegateError::Remote { status, .. } => status.code(),
            DelegateError::LinuxContainerInWasmPod { .. }
            | DelegateError::CgroupDriverMismatch { .. } => Code::FailedPrecondition,
        };
        Status::new(code, e.to_string())
    }
}

/// Who runs an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Local,
    Delegate,
}

/// How long a delegated call may take.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// Lists, status, stats: [`Remote::query_timeout`].
    Query,
    /// Lifecycle calls: the caller's own deadline, passed on.
    Caller,
}

/// The routing CRI service (see the module docs).
#[derive(Clone)]
pub struct Delegating {
    local: Cri,
    rt: Arc<Runtime>,
    remote: Arc<Remote>,
}

impl Delegating {
    /// Routes between `local` (serving `rt`) and the delegate configured in
    /// `rt.config().delegate`. Nothing is dialled yet.
    pub fn new(local: Cri, rt: Arc<Runtime>) -> Result<Self, DelegateError> {
        let remote = Arc::new(Remote::new(&rt.config().delegate)?);
        Ok(Self { local, rt, remote })
    }

    /// The delegate's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.remote.endpoint
    }

    fn is_wasm_handler(&self, handler: &str) -> bool {
        !handler.is_empty()
            && self
                .rt
                .config()
                .runtime_handlers
                .iter()
                .any(|h| h == handler)
    }

    fn owner(found: Result<(), RuntimeError>) -> Owner {
        match found {
            Err(RuntimeError::NotFound { .. }) => Owner::Delegate,
            _ => Owner::Local,
        }
    }

    fn pod_owner(&self, id: &str) -> Owner {
        Self::owner(self.rt.pod(id).map(drop))
    }

    fn container_owner(&self, id: &str) -> Owner {
        Self::owner(self.rt.container(id).map(drop))
    }

    /// Sends `r` to the delegate's RuntimeService.
    async fn forward<Q, T, F, Fut>(
        &self,
        rpc: &'static str,
        deadline: Deadline,
        r: Request<Q>,
        f: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(RuntimeServiceClient<Channel>, Request<Q>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let timeout = match deadline {
            Deadline::Query => Some(self.remote.query_timeout()),
            Deadline::Caller => caller_timeout(r.metadata()),
        };
        let req = Remote::request(r.into_inner(), timeout);
        let res = self
            .remote
            .call(rpc, timeout, f(self.remote.rt(), req))
            .await;
        logged(rpc, res)
    }

    /// Runs a delegated list and the local one side by side; merges them with `merge`.
    async fn merged<Q, T, LF, RF>(
        &self,
        rpc: &'static str,
        req: Q,
        local: LF,
        remote: RF,
        merge: fn(T, T) -> T,
    ) -> Result<T, Status>
    where
        Q: prost::Message + Clone,
        T: prost::Message + Default,
        LF: Future<Output = Result<Response<T>, Status>>,
        RF: FnOnce(
            RuntimeServiceClient<Channel>,
            Q,
        ) -> Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send>>,
    {
        let remote_fut = self
            .remote
            .list(rpc, &req, remote(self.remote.rt(), req.clone()));
        let (l, r) = tokio::join!(local, remote_fut);
        let l = l?.into_inner();
        let r = logged(rpc, r)?.into_inner();
        Ok(merge(l, r))
    }
}

/// Logs a failed delegated call (the local ones log in their own wrapper).
fn logged<T>(rpc: &'static str, res: Result<T, DelegateError>) -> Result<Response<T>, Status> {
    res.map(Response::new).map_err(|e| {
        if !matches!(&e, DelegateError::Remote { status, .. } if status.code() == Code::NotFound) {
            tracing::warn!(rpc, error = %e, "delegated call failed");
        }
        Status::from(e)
    })
}

/// Boxes a client call for [`Delegating::merged`].
macro_rules! remote_list {
    ($method:ident) => {
        |mut c: RuntimeServiceClient<Channel>, q| Box::pin(async move { c.$method(q).await })
    };
}

/// Routes an RPC by the owner of the container named in `container_id`.
macro_rules! by_container {
    ($self:ident, $r:ident, $method:ident, $rpc:literal, $deadline:expr) => {{
        let id = $r.get_ref().container_id.clone();
        match $self.container_owner(&id) {
            Owner::Local => $self.local.$method($r).await,
            Owner::Delegate => {
                $self
                    .forward(
                        $rpc,
                        $deadline,
                        $r,
                        |mut c, q| async move { c.$method(q).await },
                    )
                    .await
            }
        }
    }};
}

/// Routes an RPC by the owner of the pod named in `pod_sandbox_id`.
macro_rules! by_pod {
    ($self:ident, $r:ident, $method:ident, $rpc:literal, $deadline:expr) => {{
        let id = $r.get_ref().pod_sandbox_id.clone();
        match $self.pod_owner(&id) {
            Owner::Local => $self.local.$method($r).await,
            Owner::Delegate => {
                $self
                    .forward(
                        $rpc,
                        $deadline,
                        $r,
                        |mut c, q| async move { c.$method(q).await },
                    )
                    .await
            }
        }
    }};
}

#[tonic::async_trait]
impl RuntimeService for Delegating {
    async fn version(
        &self,
        r: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        self.local.version(r).await
    }
    async fn run_pod_sandbox(
        &self,
        r: Request<pb::RunPodSandboxRequest>,
    ) -> Result<Response<pb::RunPodSandboxResponse>, Status> {
        if self.is_wasm_handler(&r.get_ref().runtime_handler) {
            self.local.run_pod_sandbox(r).await
        } else {
            self.forward(
                "RunPodSandbox",
                Deadline::Caller,
                r,
                |mut c, q| async move { c.run_pod_sandbox(q).await },
            )
            .await
        }
    }
    async fn stop_pod_sandbox(
        &self,
        r: Request<pb::StopPodSandboxRequest>,
    ) -> Result<Response<pb::StopPodSandboxResponse>, Status> {
        by_pod!(
            self,
            r,
            stop_pod_sandbox,
            "StopPodSandbox",
            Deadline::Caller
        )
    }
    async fn remove_pod_sandbox(
        &self,
        r: Request<pb::RemovePodSandboxRequest>,
    ) -> Result<Response<pb::RemovePodSandboxResponse>, Status> {
        by_pod!(
            self,
            r,
            remove_pod_sandbox,
            "RemovePodSandbox",
            Deadline::Caller
        )
    }
    async fn pod_sandbox_status(
        &self,
        r: Request<pb::PodSandboxStatusRequest>,
    ) -> Result<Response<pb::PodSandboxStatusResponse>, Status> {
        by_pod!(
            self,
            r,
            pod_sandbox_status,
            "PodSandboxStatus",
            Deadline::Query
        )
    }
    async fn list_pod_sandbox(
        &self,
        r: Request<pb::ListPodSandboxRequest>,
    ) -> Result<Response<pb::ListPodSandboxResponse>, Status> {
        let q = r.into_inner();
        let local = self.local.list_pod_sandbox(Request::new(q.clone()));
        self.merged(
            "ListPodSandbox",
            q,
            local,
            remote_list!(list_pod_sandbox),
            merge::pods,
        )
        .await
        .map(Response::new)
    }
    async fn create_container(
        &self,
        r: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let pod = r.get_ref().pod_sandbox_id.clone();
        match self.pod_owner(&pod) {
            Owner::Delegate => {
                self.forward(
                    "CreateContainer",
                    Deadline::Caller,
                    r,
                    |mut c, q| async move { c.create_container(q).await },
                )
                .await
            }
            Owner::Local => {
                self.refuse_linux_image(&pod, r.get_ref()).await?;
                self.local.create_container(r).await
            }
        }
    }
    async fn start_container(
        &self,
        r: Request<pb::StartContainerRequest>,
    ) -> Result<Response<pb::StartContainerResponse>, Status> {
        by_container!(self, r, start_container, "StartContainer", Deadline::Caller)
    }
    async fn stop_container(
        &self,
        r: Request<pb::StopContainerRequest>,
    ) -> Result<Response<pb::StopContainerResponse>, Status> {
        by_container!(self, r, stop_container, "StopContainer", Deadline::Caller)
    }
    async fn remove_container(
        &self,
        r: Request<pb::RemoveContainerRequest>,
    ) -> Result<Response<pb::RemoveContainerResponse>, Status> {
        by_container!(
            self,
            r,
            remove_container,
            "RemoveContainer",
            Deadline::Caller
        )
    }
    async fn list_containers(
        &self,
        r: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let q = r.into_inner();
        let local = self.local.list_containers(Request::new(q.clone()));
        self.merged(
            "ListContainers",
            q,
            local,
            remote_list!(list_containers),
            merge::containers,
        )
        .await
        .map(Response::new)
    }
    async fn container_status(
        &self,
        r: Request<pb::ContainerStatusRequest>,
    ) -> Result<Response<pb::ContainerStatusResponse>, Status> {
        by_container!(
            self,
            r,
            container_status,
            "ContainerStatus",
            Deadline::Query
        )
    }
    async fn update_container_resources(
        &self,
        r: Request<pb::UpdateContainerResourcesRequest>,
    ) -> Result<Response<pb::UpdateContainerResourcesResponse>, Status> {
        by_container!(
            self,
            r,
            update_container_resources,
            "UpdateContainerResources",
            Deadline::Caller
        )
    }
    async fn reopen_container_log(
        &self,
        r: Request<pb::ReopenContainerLogRequest>,
    ) -> Result<Response<pb::ReopenContainerLogResponse>, Status> {
        by_container!(
            self,
            r,
            reopen_container_log,
            "ReopenContainerLog",
            Deadline::Caller
        )
    }
    async fn exec_sync(
        &self,
        r: Request<pb::ExecSyncRequest>,
    ) -> Result<Response<pb::ExecSyncResponse>, Status> {
        by_container!(self, r, exec_sync, "ExecSync", Deadline::Caller)
    }
    async fn exec(
        &self,
        r: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        by_container!(self, r, exec, "Exec", Deadline::Query)
    }
    async fn attach(
        &self,
        r: Request<pb::AttachRequest>,
    ) -> Result<Response<pb::AttachResponse>, Status> {
        by_container!(self, r, attach, "Attach", Deadline::Query)
    }
    async fn port_forward(
        &self,
        r: Request<pb::PortForwardRequest>,
    ) -> Result<Response<pb::PortForwardResponse>, Status> {
        by_pod!(self, r, port_forward, "PortForward", Deadline::Query)
    }
    async fn container_stats(
        &self,
        r: Request<pb::ContainerStatsRequest>,
    ) -> Result<Response<pb::ContainerStatsResponse>, Status> {
        by_container!(self, r, container_stats, "ContainerStats", Deadline::Query)
    }
    async fn list_container_stats(
        &self,
        r: Request<pb::ListContainerStatsRequest>,
    ) -> Result<Response<pb::ListContainerStatsResponse>, Status> {
        let q = r.into_inner();
        let local = self.local.list_container_stats(Request::new(q.clone()));
        self.merged(
            "ListContainerStats",
            q,
            local,
            remote_list!(list_container_stats),
            merge::container_stats,
        )
        .await
        .map(Response::new)
    }
    async fn pod_sandbox_stats(
        &self,
        r: Request<pb::PodSandboxStatsRequest>,
    ) -> Result<Response<pb::PodSandboxStatsResponse>, Status> {
        by_pod!(
            self,
            r,
            pod_sandbox_stats,
            "PodSandboxStats",
            Deadline::Query
        )
    }
    async fn list_pod_sandbox_stats(
        &self,
        r: Request<pb::ListPodSandboxStatsRequest>,
    ) -> Result<Response<pb::ListPodSandboxStatsResponse>, Status> {
        let q = r.into_inner();
        let local = self.local.list_pod_sandbox_stats(Request::new(q.clone()));
        self.merged(
            "ListPodSandboxStats",
            q,
            local,
            remote_list!(list_pod_sandbox_stats),
            merge::pod_stats,
        )
        .await
        .map(Response::new)
    }
    async fn update_runtime_config(
        &self,
        r: Request<pb::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<pb::UpdateRuntimeConfigResponse>, Status> {
        let q = r.into_inner();
        self.local
            .update_runtime_config(Request::new(q.clone()))
            .await?;
        self.forward(
            "UpdateRuntimeConfig",
            Deadline::Query,
            Request::new(q),
            |mut c, q| async move { c.update_runtime_config(q).await },
        )
        .await
    }
    async fn status(
        &self,
        r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let q = r.into_inner();
        let mut c = self.remote.rt();
        let (local, remote) = tokio::join!(
            self.local.status(Request::new(q)),
            self.remote.query("Status", c.status(q))
        );
        Ok(Response::new(merge::status(
            local?.into_inner(),
            remote,
            &self.remote.endpoint,
            &self.rt.config().runtime_handlers,
        )))
    }
    async fn checkpoint_container(
        &self,
        r: Request<pb::CheckpointContainerRequest>,
    ) -> Result<Response<pb::CheckpointContainerResponse>, Status> {
        by_container!(
            self,
            r,
            checkpoint_container,
            "CheckpointContainer",
            Deadline::Caller
        )
    }
    type GetContainerEventsStream = RpcStream<pb::ContainerEventResponse>;
    async fn get_container_events(
        &self,
        r: Request<pb::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let q = r.into_inner();
        let local = self
            .local
            .get_container_events(Request::new(q))
            .await?
            .into_inner();
        Ok(Response::new(events::merged(local, self.remote.clone(), q)))
    }
    async fn list_metric_descriptors(
        &self,
        r: Request<pb::ListMetricDescriptorsRequest>,
    ) -> Result<Response<pb::ListMetricDescriptorsResponse>, Status> {
        let q = r.into_inner();
        let mut c = self.remote.rt();
        let (l, d) = tokio::join!(
            self.local.list_metric_descriptors(Request::new(q)),
            self.remote
                .query("ListMetricDescriptors", c.list_metric_descriptors(q))
        );
        merge::either(l.map(Response::into_inner), d, merge::descriptors).map(Response::new)
    }
    async fn list_pod_sandbox_metrics(
        &self,
        r: Request<pb::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<pb::ListPodSandboxMetricsResponse>, Status> {
        self.pod_metrics(r.into_inner()).await.map(Response::new)
    }
    type StreamPodSandboxesStream = RpcStream<pb::StreamPodSandboxesResponse>;
    async fn stream_pod_sandboxes(
        &self,
        r: Request<pb::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let q = pb::ListPodSandboxRequest {
            filter: r.into_inner().filter,
        };
        let all = self.list_pod_sandbox(Request::new(q)).await?.into_inner();
        Ok(Response::new(chunked(all.items, |pod_sandboxes| {
            pb::StreamPodSandboxesResponse { pod_sandboxes }
        })))
    }
    type StreamContainersStream = RpcStream<pb::StreamContainersResponse>;
    async fn stream_containers(
        &self,
        r: Request<pb::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let q = pb::ListContainersRequest {
            filter: r.into_inner().filter,
        };
        let all = self.list_containers(Request::new(q)).await?.into_inner();
        Ok(Response::new(chunked(all.containers, |containers| {
            pb::StreamContainersResponse { containers }
        })))
    }
    type StreamContainerStatsStream = RpcStream<pb::StreamContainerStatsResponse>;
    async fn stream_container_stats(
        &self,
        r: Request<pb::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let q = pb::ListContainerStatsRequest {
            filter: r.into_inner().filter,
        };
        let all = self
            .list_container_stats(Request::new(q))
            .await?
            .into_inner();
        Ok(Response::new(chunked(all.stats, |container_stats| {
            pb::StreamContainerStatsResponse { container_stats }
        })))
    }
    type StreamPodSandboxStatsStream = RpcStream<pb::StreamPodSandboxStatsResponse>;
    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<pb::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let q = pb::ListPodSandboxStatsRequest {
            filter: r.into_inner().filter,
        };
        let all = self
            .list_pod_sandbox_stats(Request::new(q))
            .await?
            .into_inner();
        Ok(Response::new(chunked(all.stats, |pod_sandbox_stats| {
            pb::StreamPodSandboxStatsResponse { pod_sandbox_stats }
        })))
    }
    type StreamPodSandboxMetricsStream = RpcStream<pb::StreamPodSandboxMetricsResponse>;
    async fn stream_pod_sandbox_metrics(
        &self,
        r: Request<pb::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let _ = r;
        let all = self
            .pod_metrics(pb::ListPodSandboxMetricsRequest::default())
            .await?;
        Ok(Response::new(chunked(all.pod_metrics, |pod_metrics| {
            pb::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics: pod_metrics,
            }
        })))
    }
    async fn update_pod_sandbox_resources(
        &self,
        r: Request<pb::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<pb::UpdatePodSandboxResourcesResponse>, Status> {
        by_pod!(
            self,
            r,
            update_pod_sandbox_resources,
            "UpdatePodSandboxResources",
            Deadline::Caller
        )
    }
    async fn runtime_config(
        &self,
        r: Request<pb::RuntimeConfigRequest>,
    ) -> Result<Response<pb::RuntimeConfigResponse>, Status> {
        let q = r.into_inner();
        let local = self
            .local
            .runtime_config(Request::new(q))
            .await?
            .into_inner();
        let mut c = self.remote.rt();
        let remote = self
            .remote
            .query("RuntimeConfig", c.runtime_config(q))
            .await;
        merge::runtime_config(local, remote, &self.remote.endpoint).map(Response::new)
    }
}

impl Delegating {
    /// ListPodSandboxMetrics of both sides (either may not implement it).
    async fn pod_metrics(
        &self,
        q: pb::ListPodSandboxMetricsRequest,
    ) -> Result<pb::ListPodSandboxMetricsResponse, Status> {
        let mut c = self.remote.rt();
        let (l, d) = tokio::join!(
            self.local.list_pod_sandbox_metrics(Request::new(q)),
            self.remote
                .query("ListPodSandboxMetrics", c.list_pod_sandbox_metrics(q))
        );
        merge::either(l.map(Response::into_inner), d, merge::pod_metrics)
    }

    /// CreateContainer in a Wasm pod: an image only the delegate has is a Linux image, which
    /// a Wasm pod cannot run; refuse it by name instead of failing to find a module.
    async fn refuse_linux_image(
        &self,
        pod: &str,
        r: &pb::CreateContainerRequest,
    ) -> Result<(), Status> {
        let Some(spec) = r.config.as_ref().and_then(|c| c.image.clone()) else {
            return Ok(());
        };
        if spec.image.is_empty() || self.rt.has_image(&spec.image) {
            return Ok(());
        }
        let mut c = self.remote.img();
        let q = pb::ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        };
        match self.remote.query("ImageStatus", c.image_status(q)).await {
            Ok(st) if st.image.is_some() => Err(DelegateError::LinuxContainerInWasmPod {
                image: spec.image,
                pod: pod.to_owned(),
            }
            .into()),
            // Not the delegate's either (or it cannot say): the local runtime reports it.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_per_variant() {
        let e = || "unix:///c.sock".to_string();
        let cases = [
            (
                DelegateError::InvalidEndpoint {
                    endpoint: "tcp://x".into(),
                    reason: "r".into(),
                },
                Code::InvalidArgument,
                "tcp://x",
            ),
            (
                DelegateError::Unavailable {
                    endpoint: e(),
                    rpc: "ListContainers",
                    reason: "refused".into(),
                },
                Code::Unavailable,
                "unix:///c.sock",
            ),
            (
                DelegateError::Timeout {
                    endpoint: e(),
                    rpc: "Status",
                    after: Duration::from_secs(2),
                },
                Code::Unavailable,
                "unix:///c.sock",
            ),
            (
                DelegateError::Remote {
                    endpoint: e(),
                    status: Status::not_found("container \"abc\" not found"),
                },
                Code::NotFound,
                "abc",
            ),
            (
                DelegateError::LinuxContainerInWasmPod {
                    image: "registry/busybox:1".into(),
                    pod: "p".into(),
                },
                Code::FailedPrecondition,
                "registry/busybox:1",
            ),
            (
                DelegateError::CgroupDriverMismatch {
                    local: "cgroupfs",
                    delegate: "systemd",
                    endpoint: e(),
                },
                Code::FailedPrecondition,
                "systemd",
            ),
        ];
        for (err, code, needle) in cases {
            let s = Status::from(err);
            assert_eq!(s.code(), code, "{}", s.message());
            assert!(s.message().contains(needle), "{}", s.message());
        }
    }
}
