//! The connection to the delegate runtime: one lazily connected gRPC channel over its unix
//! socket (reconnected by tonic after the delegate restarts), a short connect timeout, a
//! deadline on queries, the mapping of transport failures to [`DelegateError`], and the last
//! good answer of every list so a delegate outage never makes Linux pods vanish from the
//! kubelet's view.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use cri::v1::image_service_client::ImageServiceClient;
use cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Response, Status};

use super::DelegateError;
use crate::config::DelegateConfig;

/// Largest message accepted from the delegate (its lists on a busy node).
const MAX_MESSAGE: usize = 64 << 20;

/// Lists remembered for outages; beyond this many distinct (RPC, filter) pairs the memory
/// is cleared (the kubelet asks a handful of shapes; an ID-filtered flood must not grow it).
const STALE_ENTRIES: usize = 256;

/// (RPC name, encoded request): what a remembered list answered.
type StaleKey = (&'static str, Vec<u8>);

/// The delegate runtime's client side.
pub struct Remote {
    /// The endpoint as configured, for messages.
    pub endpoint: String,
    channel: Channel,
    timeout: Duration,
    /// (RPC, encoded request) → encoded last good response.
    stale: Mutex<HashMap<StaleKey, Vec<u8>>>,
}

/// The socket path of a `unix://` endpoint (or a plain absolute path).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, DelegateError> {
    let invalid = |reason: &str| DelegateError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let path = match endpoint.split_once("://") {
        Some(("unix", p)) => p,
        Some((scheme, _)) => {
            return Err(invalid(&format!(
                "scheme {scheme:?} is not supported (only unix://)"
            )));
        }
        None => endpoint,
    };
    if !path.starts_with('/') {
        return Err(invalid("the socket path must be absolute"));
    }
    Ok(PathBuf::from(path))
}

/// The caller's `grpc-timeout`, if it sent one (`<digits><H|M|S|m|u|n>`, per the gRPC spec).
pub fn caller_timeout(meta: &MetadataMap) -> Option<Duration> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Remote {
    /// A client for `cfg.endpoint`; nothing is dialled until the first call.
    pub fn new(cfg: &DelegateConfig) -> Result<Remote, DelegateError> {
        let path = socket_path(&cfg.endpoint)?;
        let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms.max(1));
        // The URI is a placeholder: the connector below always dials the socket.
        let channel = Endpoint::from_static("http://delegate.invalid").connect_with_connector_lazy(
            tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::time::timeout(
                        connect_timeout,
                        tokio::net::UnixStream::connect(&path),
                    )
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "connecting to {} took over {connect_timeout:?}",
                                path.display()
                            ),
                        )
                    })??;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }),
        );
        Ok(Remote {
            endpoint: cfg.endpoint.clone(),
            channel,
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            stale: Mutex::new(HashMap::new()),
        })
    }

    /// A RuntimeService client on the shared channel.
    pub fn rt(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// An ImageService client on the shared channel.
    pub fn img(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// The deadline of queries.
    pub fn query_timeout(&self) -> Duration {
        self.timeout
    }

    /// `msg` as a request carrying `timeout` to the delegate.
    pub fn request<T>(msg: T, timeout: Option<Duration>) -> Request<T> {
        let mut r = Request::new(msg);
        if let Some(t) = timeout {
            r.set_timeout(t);
        }
        r
    }

    /// Awaits a delegated call, for at most `timeout` when one is given, and maps failures.
    pub async fn call<T>(
        &self,
        rpc: &'static str,
        timeout: Option<Duration>,
        fut: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, DelegateError> {
        let res = match timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(DelegateError::Timeout {
                        endpoint: self.endpoint.clone(),
                        rpc,
                        after: t,
                    });
                }
            },
            None => fut.await,
        };
        res.map(Response::into_inner)
            .map_err(|status| self.map_status(rpc, status))
    }

    /// A delegated query (deadline [`Remote::query_timeout`]).
    pub async fn query<T>(
        &self,
        rpc: &'static str,
        fut: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, DelegateError> {
        self.call(rpc, Some(self.timeout), fut).await
    }

    /// A delegated list: the answer is remembered per request; while the delegate cannot be
    /// reached the last answer to the same request is given instead (containers keep running
    /// without their manager, so it is still the truth), and without one the failure.
    pub async fn list<Q, T>(
        &self,
        rpc: &'static str,
        req: &Q,
        fut: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, DelegateError>
    where
        Q: prost::Message,
        T: prost::Message + Default,
    {
        let key = (rpc, req.encode_to_vec());
        match self.query(rpc, fut).await {
            Ok(v) => {
                let mut stale = self.stale.lock().expect("stale lock");
                if stale.len() >= STALE_ENTRIES && !stale.contains_key(&key) {
                    stale.clear();
                }
                stale.insert(key, v.encode_to_vec());
                Ok(v)
            }
            Err(e) if e.is_unavailable() => {
                let stale = self.stale.lock().expect("stale lock");
                match stale.get(&key).and_then(|b| T::decode(b.as_slice()).ok()) {
                    Some(v) => {
                        tracing::warn!(rpc, error = %e, "delegate unavailable: answering with its last list");
                        Ok(v)
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Transport failures (no socket, connection reset, refused) become
    /// [`DelegateError::Unavailable`]; the delegate's own answers pass through.
    fn map_status(&self, rpc: &'static str, status: Status) -> DelegateError {
        let transport = std::error::Error::source(&status)
            .is_some_and(|s| s.is::<tonic::transport::Error>() || s.is::<std::io::Error>());
        if status.code() == Code::Unavailable || transport {
            DelegateError::Unavailable {
                endpoint: self.endpoint.clone(),
                rpc,
                reason: status.message().to_owned(),
            }
        } else {
            DelegateError::Remote {
                endpoint: self.endpoint.clone(),
                status,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").unwrap(),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            socket_path("/run/c.sock").unwrap(),
            PathBuf::from("/run/c.sock")
        );
        for bad in ["tcp://1.2.3.4:5", "unix://relative.sock", "c.sock", ""] {
            let e = socket_path(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn grpc_timeouts() {
        let t = |v: &str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            caller_timeout(&m)
        };
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("119999m"), Some(Duration::from_millis(119_999)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(t("S"), None);
        assert_eq!(t("12x"), None);
        assert_eq!(t("1234567890S"), None);
        assert_eq!(caller_timeout(&MetadataMap::new()), None);
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("unix://{}", dir.path().join("none.sock").display());
        let r = Remote::new(&DelegateConfig {
            endpoint: endpoint.clone(),
            ..Default::default()
        })
        .unwrap();
        let req = cri::v1::ListContainersRequest::default();
        let e = r
            .list("ListContainers", &req, r.rt().list_containers(req.clone()))
            .await
            .unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        let s = Status::from(e);
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains(&endpoint), "{}", s.message());
    }
}
