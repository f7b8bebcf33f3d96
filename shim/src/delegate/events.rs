//! GetContainerEvents of both runtimes as one stream.
//!
//! The local stream is passed on as it is (its `ABORTED` on lag ends the merged stream: the
//! kubelet reconnects and relists). The delegate's is followed by a task that reconnects with
//! backoff whenever it ends or cannot be opened, so a delegate restart never ends the
//! kubelet's stream; events the delegate emits while away are covered by the kubelet's
//! periodic relist, as with the delegate alone.

use std::sync::Arc;
use std::time::Duration;

use cri::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::remote::Remote;
use crate::server::list_stream::RpcStream;

/// Events buffered between the two followers and gRPC (a slow reader makes them wait).
const BUFFER: usize = 64;
/// First and largest pause between attempts to reopen the delegate's stream.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Merges `local` with the delegate's event stream.
pub fn merged(
    mut local: RpcStream<pb::ContainerEventResponse>,
    remote: Arc<Remote>,
    req: pb::GetEventsRequest,
) -> RpcStream<pb::ContainerEventResponse> {
    let (tx, rx) = mpsc::channel(BUFFER);
    let local_tx = tx.clone();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = local.next() => next,
                () = local_tx.closed() => return,
            };
            let Some(item) = next else { return };
            let last = item.is_err();
            if local_tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        loop {
            let mut client = remote.rt();
            let opened = tokio::select! {
                r = client.get_container_events(req) => r,
                () = tx.closed() => return,
            };
            match opened {
                Ok(resp) => {
                    let mut stream = resp.into_inner();
                    loop {
                        let next = tokio::select! {
                            n = stream.message() => n,
                            () = tx.closed() => return,
                        };
                        match next {
                            Ok(Some(ev)) => {
                                backoff = BACKOFF_MIN;
                                if tx.send(Ok(ev)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(endpoint = %remote.endpoint, error = %e, "delegate event stream ended");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(endpoint = %remote.endpoint, error = %e, "delegate event stream not open");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = tx.closed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
