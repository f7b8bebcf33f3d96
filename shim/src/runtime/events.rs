//! Container lifecycle events, for the CRI's `GetContainerEvents` (the kubelet's evented
//! PLEG).
//!
//! Every subscriber gets every event from the moment it subscribes, through a bounded
//! broadcast channel: a subscriber that falls [`EVENT_BACKLOG`] events behind is told it
//! lagged (the kubelet then reconnects and relists) instead of making the runtime wait or
//! buffer without bound. Sandboxes have events too, with the sandbox ID as the container ID,
//! as containerd sends them. [`Events::close`] ends every subscription, so a daemon shutting
//! down does not wait on open streams.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::Pod;

/// Events a subscriber may fall behind before it is cut off.
pub const EVENT_BACKLOG: usize = 1024;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEventKind {
    /// CreateContainer (or RunPodSandbox) finished.
    Created,
    /// The container's guest is running (or the sandbox is ready).
    Started,
    /// It exited or was stopped.
    Stopped,
    /// It was removed.
    Deleted,
}

/// One lifecycle event.
#[derive(Debug, Clone)]
pub struct ContainerEvent {
    /// The container's ID, or the sandbox's for sandbox events.
    pub id: String,
    /// The sandbox (kept even once it is removed, so its last status can still be told).
    pub pod: Arc<Pod>,
    /// What happened.
    pub kind: ContainerEventKind,
    /// When, Unix nanoseconds.
    pub at: i64,
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventsEnded {
    /// The subscriber missed this many events.
    #[error("the subscriber fell {0} events behind")]
    Lagged(u64),
    /// The runtime is shutting down.
    #[error("the runtime is shutting down")]
    Closed,
}

/// The runtime's event hub.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<ContainerEvent>,
    closed: watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(EVENT_BACKLOG).0,
            closed: watch::channel(false).0,
        }
    }
}

impl Events {
    /// Publishes an event (dropped when nobody listens).
    pub fn emit(&self, id: &str, pod: &Arc<Pod>, kind: ContainerEventKind) {
        let _ = self.tx.send(ContainerEvent {
            id: id.to_owned(),
            pod: pod.clone(),
            kind,
            at: crate::ids::now_ns(),
        });
    }

    /// A new subscription, receiving events from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            closed: self.closed.subscribe(),
        }
    }

    /// Ends every subscription, present and future.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// One subscriber's view of the events.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<ContainerEvent>,
    closed: watch::Receiver<bool>,
}

impl Subscription {
    /// The next event, or why there will be none.
    pub async fn recv(&mut self) -> Result<ContainerEvent, EventsEnded> {
        tokio::select! {
            biased;
            _ = self.closed.wait_for(|c| *c) => Err(EventsEnded::Closed),
            r = self.rx.recv() => match r {
                Ok(e) => Ok(e),
                Err(broadcast::error::RecvError::Lagged(n)) => Err(EventsEnded::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => Err(EventsEnded::Closed),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Arc<Pod> {
        let rec: crate::pod::PodRecord = serde_json::from_value(serde_json::json!({
            "meta": {"id":"p1","name":"web","uid":"u1","namespace":"ns","attempt":0,
                "labels":{},"annotations":{},"runtime_handler":"wasmtime","created_at":1,
                "log_directory":"","hostname":"web","cgroup_parent":"","dns":null,
                "host_network":true,"port_mappings":[],"netns":null,"dir":"/d"},
            "state": {"phase":"Ready","ips":[],"network_attached":false}
        }))
        .unwrap();
        Pod::new(rec)
    }

    #[tokio::test]
    async fn subscribers_see_events_in_order_then_close() {
        let ev = Events::default();
        let p = pod();
        ev.emit("before", &p, ContainerEventKind::Created);
        let mut a = ev.subscribe();
        ev.emit("c1", &p, ContainerEventKind::Created);
        ev.emit("c1", &p, ContainerEventKind::Started);
        let e = a.recv().await.unwrap();
        assert_eq!((e.id.as_str(), e.kind), ("c1", ContainerEventKind::Created));
        assert_eq!(a.recv().await.unwrap().kind, ContainerEventKind::Started);
        ev.close();
        assert_eq!(a.recv().await.unwrap_err(), EventsEnded::Closed);
        // Closing wins over queued events, and later subscribers end at once.
        ev.emit("c2", &p, ContainerEventKind::Stopped);
        assert_eq!(
            ev.subscribe().recv().await.unwrap_err(),
            EventsEnded::Closed
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_it_lagged() {
        let ev = Events::default();
        let p = pod();
        let mut s = ev.subscribe();
        for _ in 0..EVENT_BACKLOG + 5 {
            ev.emit("c", &p, ContainerEventKind::Started);
        }
        assert_eq!(s.recv().await.unwrap_err(), EventsEnded::Lagged(5));
    }
}
