//! GetContainerEvents: the stream the kubelet's evented PLEG follows.
//!
//! Each subscriber gets a task that turns runtime events into CRI events, with the sandbox's
//! status and its containers' statuses taken when the event is sent (what the kubelet puts in
//! its pod cache). The task writes into a small bounded channel: a kubelet that stops reading
//! makes it wait, the runtime's broadcast then reports the lag, and the stream ends with
//! `ABORTED` (the kubelet reconnects and relists) rather than anything growing.

use std::sync::Arc;

use cri::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use super::list_stream::RpcStream;
use crate::runtime::{ContainerEvent, ContainerEventKind, EventsEnded, Result, Runtime};

/// Events buffered per subscriber between its task and gRPC.
const SEND_BUFFER: usize = 64;

/// GetContainerEvents.
pub async fn events(
    rt: &Arc<Runtime>,
    _r: pb::GetEventsRequest,
) -> Result<RpcStream<pb::ContainerEventResponse>> {
    let mut sub = rt.subscribe_events();
    let (tx, rx) = mpsc::channel(SEND_BUFFER);
    let rt = rt.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = sub.recv() => next,
                () = tx.closed() => return,
            };
            let msg = match next {
                Ok(ev) => Ok(to_pb(&rt, &ev)),
                Err(EventsEnded::Closed) => return,
                Err(e @ EventsEnded::Lagged(_)) => Err(Status::aborted(format!(
                    "container events: {e}; reconnect and relist"
                ))),
            };
            let last = msg.is_err();
            if tx.send(msg).await.is_err() || last {
                return;
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

fn to_pb(rt: &Runtime, ev: &ContainerEvent) -> pb::ContainerEventResponse {
    let status = super::sandbox_status::to_pb(&rt.pod_view(&ev.pod), false);
    pb::ContainerEventResponse {
        container_id: ev.id.clone(),
        container_event_type: match ev.kind {
            ContainerEventKind::Created => pb::ContainerEventType::ContainerCreatedEvent,
            ContainerEventKind::Started => pb::ContainerEventType::ContainerStartedEvent,
            ContainerEventKind::Stopped => pb::ContainerEventType::ContainerStoppedEvent,
            ContainerEventKind::Deleted => pb::ContainerEventType::ContainerDeletedEvent,
        } as i32,
        created_at: ev.at,
        pod_sandbox_status: status.status,
        containers_statuses: status.containers_statuses,
    }
}
