//! The `Stream*` list RPCs (`CRIRpcStreaming`): the same answers as the unary `List*` RPCs,
//! cut into messages of at most [`CHUNK`] items, so a node with thousands of objects never
//! hits gRPC's message size limit.
//!
//! Each list is taken as one snapshot (the unary handler) and then sent; a client that reads
//! slowly holds only its own copy, never a runtime lock.

use std::pin::Pin;
use std::sync::Arc;

use cri::v1 as pb;
use tonic::Status;

use crate::runtime::{Result, Runtime};

/// Items per streamed message. Kubernetes objects here are a few hundred bytes to a few KiB,
/// so 128 keeps each message far below gRPC's 4 MiB default.
pub const CHUNK: usize = 128;

/// A server stream of list chunks.
pub type RpcStream<T> =
    Pin<Box<dyn tokio_stream::Stream<Item = std::result::Result<T, Status>> + Send>>;

/// Cuts `items` into messages of at least one and at most [`CHUNK`] items made by `wrap`, as
/// the CRI asks: an empty list is a stream that ends at once, and the end of the stream is
/// what tells the kubelet the list is complete.
pub fn chunked<I, T>(items: Vec<I>, wrap: fn(Vec<I>) -> T) -> RpcStream<T>
where
    I: Send + 'static,
    T: Send + 'static,
{
    chunked_by(items, CHUNK, wrap)
}

/// [`chunked`] with `per_message` items a message, for items larger than a list entry (a
/// pod's metrics).
pub fn chunked_by<I, T>(items: Vec<I>, per_message: usize, wrap: fn(Vec<I>) -> T) -> RpcStream<T>
where
    I: Send + 'static,
    T: Send + 'static,
{
    let per_message = per_message.max(1);
    let mut msgs = Vec::with_capacity(items.len().div_ceil(per_message));
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        msgs.push(Ok(wrap(it.by_ref().take(per_message).collect())));
    }
    Box::pin(tokio_stream::iter(msgs))
}

/// StreamPodSandboxes.
pub async fn pods(
    rt: &Arc<Runtime>,
    r: pb::StreamPodSandboxesRequest,
) -> Result<RpcStream<pb::StreamPodSandboxesResponse>> {
    let all = super::sandbox_list::list(rt, pb::ListPodSandboxRequest { filter: r.filter }).await?;
    Ok(chunked(all.items, |pod_sandboxes| {
        pb::StreamPodSandboxesResponse { pod_sandboxes }
    }))
}

/// StreamContainers.
pub async fn containers(
    rt: &Arc<Runtime>,
    r: pb::StreamContainersRequest,
) -> Result<RpcStream<pb::StreamContainersResponse>> {
    let all =
        super::container_list::list(rt, pb::ListContainersRequest { filter: r.filter }).await?;
    Ok(chunked(all.containers, |containers| {
        pb::StreamContainersResponse { containers }
    }))
}

/// StreamContainerStats.
pub async fn container_stats(
    rt: &Arc<Runtime>,
    r: pb::StreamContainerStatsRequest,
) -> Result<RpcStream<pb::StreamContainerStatsResponse>> {
    let all = super::container_stats::list(rt, pb::ListContainerStatsRequest { filter: r.filter })
        .await?;
    Ok(chunked(all.stats, |container_stats| {
        pb::StreamContainerStatsResponse { container_stats }
    }))
}

/// StreamPodSandboxStats.
pub async fn pod_stats(
    rt: &Arc<Runtime>,
    r: pb::StreamPodSandboxStatsRequest,
) -> Result<RpcStream<pb::StreamPodSandboxStatsResponse>> {
    let all =
        super::container_stats::list_pods(rt, pb::ListPodSandboxStatsRequest { filter: r.filter })
            .await?;
    Ok(chunked(all.stats, |pod_sandbox_stats| {
        pb::StreamPodSandboxStatsResponse { pod_sandbox_stats }
    }))
}

/// StreamImages.
pub async fn images(
    rt: &Arc<Runtime>,
    r: pb::StreamImagesRequest,
) -> Result<RpcStream<pb::StreamImagesResponse>> {
    let all = super::image_list::list(rt, pb::ListImagesRequest { filter: r.filter }).await?;
    Ok(chunked(all.images, |images| pb::StreamImagesResponse {
        images,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    async fn sizes(n: usize) -> Vec<usize> {
        let s = chunked((0..n).collect::<Vec<_>>(), |v| v);
        s.map(|m| m.expect("ok").len()).collect().await
    }

    #[tokio::test]
    async fn chunks_cover_every_item_once() {
        assert_eq!(sizes(0).await, Vec::<usize>::new());
        assert_eq!(sizes(1).await, vec![1]);
        assert_eq!(sizes(CHUNK).await, vec![CHUNK]);
        assert_eq!(sizes(CHUNK + 1).await, vec![CHUNK, 1]);
        assert_eq!(sizes(3 * CHUNK).await, vec![CHUNK; 3]);
        let s = chunked((0..300).collect::<Vec<_>>(), |v| v);
        let all: Vec<usize> = s.map(|m| m.expect("ok")).collect::<Vec<_>>().await.concat();
        assert_eq!(all, (0..300).collect::<Vec<_>>());
    }
}
