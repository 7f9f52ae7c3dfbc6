//! The worker's event loop: one thread, one connection.
//!
//! Requests are queued in arrival order and run one at a time. Before each
//! run, the loop drains every message already waiting on the socket, so a
//! `Cancel` for a queued request, a `Ping` or a `Shutdown` is seen before the
//! next inference starts — without a second thread, whose hand-off would cost
//! more than a small model's whole inference. A `Ping` sent during a long
//! inference is answered when it ends; a hung inference is the supervisor's to
//! detect (by its deadline) and to kill.

use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ward_protocol::{
    FrameLimit, FromWorker, Hello, InferError, InferErrorKind, InferOk, InferRequest,
    LoadErrorKind, LoadFailed, PROTOCOL_VERSION, ProtocolError, RequestId, ToWorker, WorkerStats,
    read_message, write_message,
};

use crate::backend::{self, Backend, Failure};
use crate::stats;

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum Exit {
    #[error("the supervisor refused the handshake: {0}")]
    Refused(String),
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),
    /// The backend died under a request (e.g. the plugin process exited).
    #[error("backend failure: {0}")]
    Backend(String),
}

struct Queued {
    req: InferRequest,
    deadline: Instant,
}

pub struct Server<S> {
    reader: BufReader<S>,
    /// How long to poll for the next message before blocking (see [`spin_until_readable`]).
    spin: Duration,
    writer: S,
    limit: FrameLimit,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    backend: Option<Backend>,
    queue: VecDeque<Queued>,
    served: u64,
    failed: u64,
}

impl<S: Read + Write + AsFd> Server<S> {
    /// Shakes hands over `stream`; `writer` is a second handle to the same socket.
    pub fn connect(
        stream: S,
        writer: S,
        token: String,
        limit: FrameLimit,
        spin: Duration,
    ) -> Result<Server<S>, Exit> {
        let mut server = Server {
            reader: BufReader::with_capacity(64 << 10, stream),
            spin,
            writer,
            limit,
            read_buf: Vec::new(),
            write_buf: Vec::new(),
            backend: None,
            queue: VecDeque::new(),
            served: 0,
            failed: 0,
        };
        server.send(&FromWorker::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            pid: std::process::id(),
            token,
        }))?;
        match server.receive()? {
            ToWorker::Welcome { .. } => Ok(server),
            ToWorker::Refused { reason } => Err(Exit::Refused(reason)),
            other => Err(Exit::Refused(format!("expected Welcome, got {other:?}"))),
        }
    }

    fn send(&mut self, msg: &FromWorker) -> Result<(), ProtocolError> {
        write_message(&mut self.writer, msg, self.limit, &mut self.write_buf)
    }

    fn receive(&mut self) -> Result<ToWorker, ProtocolError> {
        read_message(&mut self.reader, self.limit, &mut self.read_buf)
    }

    /// Whether a message can be read without blocking.
    fn readable(&self) -> bool {
        !self.reader.buffer().is_empty() || poll_readable(self.reader.get_ref())
    }

    /// Sleeps until the supervisor writes — or the backend's plugin process
    /// stirs, which while idle can only mean it died (or wrote out of turn):
    /// then the worker exits at once, so that its death shows in the model's
    /// readiness now rather than at the next request.
    fn wait_idle(&mut self) -> Result<(), Exit> {
        let Some(plugin) = self.backend.as_ref().and_then(Backend::watch_fd) else {
            return Ok(());
        };
        let stirred = {
            let mut fds = [
                PollFd::new(self.reader.get_ref().as_fd(), PollFlags::POLLIN),
                PollFd::new(plugin, PollFlags::POLLIN),
            ];
            loop {
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => break fds[1].any().unwrap_or(false),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => break false,
                }
            }
        };
        match (stirred, self.backend.as_mut()) {
            (true, Some(backend)) => Err(Exit::Backend(backend.idle_failure())),
            _ => Ok(()),
        }
    }

    /// Serves until the supervisor hangs up or says Shutdown.
    pub fn run(mut self) -> Result<(), Exit> {
        loop {
            // Take every message already waiting; when idle, wait for the next.
            loop {
                if self.queue.is_empty() {
                    if self.reader.buffer().is_empty() {
                        spin_until_readable(self.reader.get_ref(), self.spin);
                        self.wait_idle()?;
                    }
                } else if !self.readable() {
                    break;
                }
                let msg = match self.receive() {
                    Ok(msg) => msg,
                    Err(ProtocolError::Closed) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                if !self.handle(msg)? {
                    return Ok(());
                }
            }
            if let Some(next) = self.queue.pop_front() {
                self.run_one(next)?;
            }
        }
    }

    /// Handles one message; `false` means stop.
    fn handle(&mut self, msg: ToWorker) -> Result<bool, Exit> {
        match msg {
            ToWorker::Infer(req) => {
                let deadline = Instant::now() + Duration::from_micros(req.budget_us);
                self.queue.push_back(Queued { req, deadline });
            }
            ToWorker::Cancel { id } => {
                if let Some(at) = self.queue.iter().position(|q| q.req.id == id) {
                    self.queue.remove(at);
                    self.fail(
                        id,
                        InferErrorKind::Cancelled,
                        "cancelled before it ran".into(),
                        None,
                    )?;
                }
            }
            ToWorker::Ping { seq } => {
                let stats = WorkerStats {
                    rss_bytes: stats::rss_bytes(),
                    requests_served: self.served,
                    requests_failed: self.failed,
                    in_flight: self.queue.len() as u32,
                };
                self.send(&FromWorker::Pong { seq, stats })?;
            }
            ToWorker::Load(req) => {
                let reply = if self.backend.is_some() {
                    FromWorker::LoadFailed(LoadFailed {
                        kind: LoadErrorKind::Protocol,
                        message: "already loaded".into(),
                    })
                } else {
                    match backend::load(&req, self.limit.get() as usize) {
                        Ok((b, loaded)) => {
                            self.backend = Some(b);
                            FromWorker::Loaded(loaded)
                        }
                        Err(failed) => FromWorker::LoadFailed(failed),
                    }
                };
                self.send(&reply)?;
            }
            ToWorker::Shutdown => return Ok(false),
            ToWorker::Welcome { .. } | ToWorker::Refused { .. } => {}
        }
        Ok(true)
    }

    fn fail(
        &mut self,
        id: RequestId,
        kind: InferErrorKind,
        message: String,
        exception: Option<String>,
    ) -> Result<(), Exit> {
        self.failed += 1;
        self.send(&FromWorker::InferErr(InferError {
            id,
            kind,
            message,
            exception,
        }))?;
        Ok(())
    }

    fn run_one(&mut self, q: Queued) -> Result<(), Exit> {
        let id = q.req.id;
        if Instant::now() >= q.deadline {
            return self.fail(
                id,
                InferErrorKind::Timeout,
                "the deadline passed before the request ran".into(),
                None,
            );
        }
        let Some(backend) = self.backend.as_mut() else {
            return self.fail(
                id,
                InferErrorKind::Internal,
                "no model is loaded".into(),
                None,
            );
        };
        match backend.infer(q.req.input) {
            Ok(mut outcome) => {
                if !q.req.outputs.is_empty() {
                    if let Some(missing) = q
                        .req
                        .outputs
                        .iter()
                        .find(|n| !outcome.outputs.iter().any(|t| &t.name == *n))
                    {
                        let names: Vec<&str> =
                            outcome.outputs.iter().map(|t| t.name.as_str()).collect();
                        let msg = format!(
                            "unknown output {missing:?} (the model produces: {})",
                            names.join(", ")
                        );
                        return self.fail(id, InferErrorKind::InvalidInput, msg, None);
                    }
                    outcome.outputs.retain(|t| q.req.outputs.contains(&t.name));
                }
                self.served += 1;
                let reply = FromWorker::InferOk(InferOk {
                    id,
                    outputs: outcome.outputs,
                    structured: outcome.structured,
                    timings: outcome.timings,
                });
                match self.send(&reply) {
                    Err(ProtocolError::FrameTooLarge { len, max }) => self.fail(
                        id,
                        InferErrorKind::InvalidOutput,
                        format!(
                            "the model's output ({len} bytes) exceeds the {max}-byte frame limit"
                        ),
                        None,
                    ),
                    other => Ok(other?),
                }
            }
            Err(Failure::Request {
                kind,
                message,
                exception,
            }) => self.fail(id, kind, message, exception),
            Err(Failure::Fatal(message)) => Err(Exit::Backend(message)),
        }
    }
}

/// Connects to the supervisor's socket and serves it.
pub fn serve_socket(
    path: &str,
    token: String,
    limit: FrameLimit,
    spin: Duration,
) -> Result<(), Exit> {
    let stream = UnixStream::connect(path).map_err(ProtocolError::from)?;
    let writer = stream.try_clone().map_err(ProtocolError::from)?;
    Server::connect(stream, writer, token, limit, spin)?.run()
}

fn poll_readable(fd: impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Polls `fd` without sleeping for up to `budget`, returning early once it is
/// readable; the caller then blocks as usual.
///
/// Waking a sleeping process costs tens of microseconds on virtual machines
/// (measured here: a blocking Unix-socket round trip takes ~53 µs, a polling
/// one ~4.5 µs), more than a small model's whole inference. Requests usually
/// arrive back to back, so a short bounded poll after each reply catches the
/// next one awake. The cost is bounded too: at most `budget` of CPU per
/// message, nothing while idle beyond that.
pub fn spin_until_readable(fd: impl AsFd, budget: Duration) {
    if budget.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < budget {
        if poll_readable(fd.as_fd()) {
            return;
        }
        std::hint::spin_loop();
    }
}
