//! Command line and connection set-up of `ward-worker`.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use ward_protocol::{
    FrameLimit, FromWorker, Hello, LoadErrorKind, LoadFailed, PROTOCOL_VERSION, ProtocolError,
    ToWorker, WorkerStats, read_message, write_message,
};

use crate::stats;

const USAGE: &str = "usage: ward-worker --socket PATH   (token in WARD_WORKER_TOKEN)";

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let socket = match args.as_slice() {
        [flag, path] if flag == "--socket" => path.clone(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let token = std::env::var("WARD_WORKER_TOKEN").unwrap_or_default();
    match serve(&socket, token) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ward-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connects, shakes hands and answers the supervisor until it hangs up.
fn serve(socket: &str, token: String) -> Result<(), ProtocolError> {
    let mut stream = UnixStream::connect(socket)?;
    let limit = FrameLimit::DEFAULT;
    let mut buf = Vec::new();
    let hello = FromWorker::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
        token,
    });
    write_message(&mut stream, &hello, limit, &mut buf)?;
    match read_message::<ToWorker>(&mut stream, limit, &mut buf)? {
        ToWorker::Welcome { .. } => {}
        ToWorker::Refused { reason } => {
            eprintln!("ward-worker: refused by the supervisor: {reason}");
            return Ok(());
        }
        other => {
            eprintln!("ward-worker: expected Welcome, got {other:?}");
            return Ok(());
        }
    }
    let mut out = Vec::new();
    loop {
        let msg = match read_message::<ToWorker>(&mut stream, limit, &mut buf) {
            Ok(msg) => msg,
            // The supervisor hung up: nothing left to serve.
            Err(ProtocolError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let reply = match msg {
            ToWorker::Ping { seq } => FromWorker::Pong {
                seq,
                stats: WorkerStats {
                    rss_bytes: stats::rss_bytes(),
                    ..WorkerStats::default()
                },
            },
            ToWorker::Load(_) => FromWorker::LoadFailed(LoadFailed {
                kind: LoadErrorKind::Runtime,
                message: "this ward-worker build has no model backend".to_owned(),
            }),
            ToWorker::Shutdown => return Ok(()),
            other => {
                eprintln!("ward-worker: unexpected {other:?}");
                continue;
            }
        };
        write_message(&mut stream, &reply, limit, &mut out)?;
    }
}
