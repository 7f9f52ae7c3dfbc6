//! What both launchers share once a worker process exists: its one-time
//! token, the handshake on its socket, and what a connected worker hands the
//! owner task.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use ward_protocol::{FromWorker, PROTOCOL_VERSION, ProtocolError, ToWorker};

use crate::launch::ipc::Conn;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot prepare the run directory {}", .path.display())]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the worker {}", .binary.display())]
    Exec {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the worker did not connect within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the worker exited before connecting ({0})")]
    ExitedEarly(String),
    #[error("Docker: {0}")]
    Docker(String),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("cannot create the worker's cgroup")]
    Cgroup(#[source] crate::sandbox::cgroup::CgroupError),
    #[error("sandbox.strict: cgroup controllers unavailable: {0}")]
    Strict(String),
    #[error("cannot create the jail directory {}", .path.display())]
    JailDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read /dev/urandom for the worker's token")]
    Token(#[source] std::io::Error),
    #[error("worker socket error")]
    Protocol(#[from] ProtocolError),
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}

/// A worker's output stream.
pub type Output = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// A worker that has completed the handshake: what the owner task talks to
/// and reads logs from.
pub struct Connected {
    pub pid: u32,
    pub conn: Conn,
    pub stdout: Option<Output>,
    pub stderr: Option<Output>,
}

/// A fresh one-time token: 128 random bits, hex. Without randomness there is
/// no token worth the name, so that is an error, never a fallback value.
pub fn token() -> Result<String, LaunchError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(LaunchError::Token)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The worker's side of the handshake: a Hello with our protocol version and
/// its one-time token, answered with Welcome (or Refused, and an error).
pub async fn handshake(
    conn: &mut Conn,
    token: &str,
    connect_timeout: Duration,
) -> Result<(), LaunchError> {
    let hello = tokio::time::timeout(connect_timeout, conn.next())
        .await
        .map_err(|_| LaunchError::ConnectTimeout(connect_timeout))??;
    let verdict = match hello {
        FromWorker::Hello(h) if h.protocol_version != PROTOCOL_VERSION => Err(format!(
            "protocol version {} (this supervisor speaks {PROTOCOL_VERSION})",
            h.protocol_version
        )),
        FromWorker::Hello(h) if h.token != token => Err("wrong token".to_owned()),
        FromWorker::Hello(_) => Ok(()),
        other => Err(format!("expected Hello, got {}", describe(&other))),
    };
    match verdict {
        Ok(()) => {
            conn.send(&ToWorker::Welcome {
                protocol_version: PROTOCOL_VERSION,
            })
            .await?;
            Ok(())
        }
        Err(reason) => {
            let _ = conn
                .send(&ToWorker::Refused {
                    reason: reason.clone(),
                })
                .await;
            Err(LaunchError::Handshake(reason))
        }
    }
}

/// A short name for a message, for errors (never its payload).
pub fn describe(msg: &FromWorker) -> &'static str {
    match msg {
        FromWorker::Hello(_) => "Hello",
        FromWorker::Loaded(_) => "Loaded",
        FromWorker::LoadFailed(_) => "LoadFailed",
        FromWorker::InferOk(_) => "InferOk",
        FromWorker::InferErr(_) => "InferErr",
        FromWorker::Pong { .. } => "Pong",
    }
}
