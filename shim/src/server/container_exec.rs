//! ExecSync (what the kubelet's exec probes call), and the streaming RPCs `Exec`, `Attach`
//! and `PortForward`, which validate the request and answer with a single-use URL on the
//! streaming server ([`crate::streaming`]) that the kubelet then proxies the client to.

use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime, RuntimeError};
use crate::streaming::{ExecRequest, Pending, PortForwardRequest, StreamingServer};

/// ExecSync.
pub async fn exec_sync(rt: &Arc<Runtime>, r: pb::ExecSyncRequest) -> Result<pb::ExecSyncResponse> {
    let out = rt.exec_sync(&r.container_id, r.cmd, r.timeout).await?;
    Ok(pb::ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}

fn server(streaming: Option<&Arc<StreamingServer>>) -> Result<&Arc<StreamingServer>> {
    streaming.ok_or(RuntimeError::NoStreamingServer)
}

fn url(streaming: &StreamingServer, req: Pending) -> Result<String> {
    let (kind, id) = match &req {
        Pending::Exec(r) | Pending::Attach(r) => ("container", r.container_id.clone()),
        Pending::PortForward(r) => ("pod sandbox", r.pod_id.clone()),
    };
    streaming
        .url_for(req)
        .map_err(|source| RuntimeError::StreamingBusy { kind, id, source })
}

/// Exec: checks the request as the kubelet expects (a command; at least one of stdin,
/// stdout, stderr; not tty with stderr, since a terminal merges them) and that the container
/// is running, and returns the URL of the session.
pub async fn exec(
    rt: &Arc<Runtime>,
    streaming: Option<&Arc<StreamingServer>>,
    r: pb::ExecRequest,
) -> Result<pb::ExecResponse> {
    if r.cmd.is_empty() {
        return Err(RuntimeError::InvalidArgument("exec cmd is empty".into()));
    }
    if r.tty && r.stderr {
        return Err(RuntimeError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !r.stdin && !r.stdout && !r.stderr {
        return Err(RuntimeError::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    let streaming = server(streaming)?;
    let container_id = rt.check_exec(&r.container_id)?;
    let url = url(
        streaming,
        Pending::Exec(ExecRequest {
            container_id,
            cmd: r.cmd,
            attach: false,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        }),
    )?;
    Ok(pb::ExecResponse { url })
}

/// Attach: checks the request (at least one stream; not tty with stderr) and that the
/// container is running and, if stdin is asked for, was created with stdin; returns the URL
/// of the session, which reaches the guest's stdio through its runner's attach socket.
pub async fn attach(
    rt: &Arc<Runtime>,
    streaming: Option<&Arc<StreamingServer>>,
    r: pb::AttachRequest,
) -> Result<pb::AttachResponse> {
    if r.tty && r.stderr {
        return Err(RuntimeError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !r.stdin && !r.stdout && !r.stderr {
        return Err(RuntimeError::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    let streaming = server(streaming)?;
    let (container_id, _) = rt.check_attach(&r.container_id, r.stdin)?;
    let url = url(
        streaming,
        Pending::Attach(ExecRequest {
            container_id,
            cmd: Vec::new(),
            attach: true,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        }),
    )?;
    Ok(pb::AttachResponse { url })
}

/// PortForward: checks that the pod exists and is ready, and returns the URL of the session.
pub async fn port_forward(
    rt: &Arc<Runtime>,
    streaming: Option<&Arc<StreamingServer>>,
    r: pb::PortForwardRequest,
) -> Result<pb::PortForwardResponse> {
    let pod_id = rt.check_port_forward(&r.pod_sandbox_id)?;
    if let Some(p) = r.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(RuntimeError::InvalidArgument(format!("invalid port {p}")));
    }
    let streaming = server(streaming)?;
    let url = url(
        streaming,
        Pending::PortForward(PortForwardRequest {
            pod_id,
            // Checked above to be 1..=65535.
            ports: r.port.iter().map(|p| *p as u16).collect(),
        }),
    )?;
    Ok(pb::PortForwardResponse { url })
}
