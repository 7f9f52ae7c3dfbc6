//! The worker's event loop: one connection, read by one thread.
//!
//! Most models are served on that thread alone: requests are queued in
//! arrival order and run one at a time. Before each run, the loop drains every
//! message already waiting on the socket, so a `Cancel` for a queued request, a
//! `Ping` or a `Shutdown` is seen before the next inference starts — without a
//! second thread, whose hand-off would cost more than a small model's whole
//! inference. A `Ping` sent during a long inference is answered when it ends; a
//! hung inference is the supervisor's to detect (by its deadline) and to kill.
//! (The supervisor pings only a worker with nothing in flight, so a busy
//! worker is never judged by a late `Pong`.) A `Ping` runs the model's own
//! health check first — a Python plugin's `health(context)` — and the `Pong`
//! carries its result.
//!
//! An ONNX model that asks for N >= 2 CPU threads is served by N lanes instead
//! (see `lanes.rs` and [`backend::lanes`]): this thread then only reads
//! the socket — queueing requests, removing cancelled ones, answering pings at
//! once — while the lanes run requests in parallel and answer each as it
//! finishes, out of order (replies carry the request's id).

use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ward_protocol::{
    FrameLimit, FromWorker, HealthCheck, Hello, InferErrorKind, LoadErrorKind, LoadFailed,
    PROTOCOL_VERSION, PhaseLimits, ProtocolError, ToWorker, WorkerStats, read_message,
};

use crate::backend::{self, Backend, Serving};
use crate::execute::{Answer, Exit, Out, Queued, execute, lock, refusal};
use crate::lanes::Lanes;
use crate::stats;

/// How requests run once a model is loaded.
enum Engine {
    /// Nothing is loaded yet.
    Empty,
    /// On the event loop's own thread, one at a time.
    Inline(Backend),
    /// On lane threads, in parallel.
    Lanes(Lanes),
}

pub struct Server<S> {
    reader: BufReader<S>,
    /// How long to poll for the next message before blocking (see [`spin_until_readable`]).
    spin: Duration,
    out: Arc<Mutex<Out<S>>>,
    limit: FrameLimit,
    read_buf: Vec<u8>,
    engine: Engine,
    /// Requests waiting to run inline (the lanes keep their own queue).
    queue: VecDeque<Queued>,
    /// Each phase's limit, from `Load`.
    limits: PhaseLimits,
}

impl<S: Read + Write + AsFd + Send + 'static> Server<S> {
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
            out: Arc::new(Mutex::new(Out::new(writer, limit))),
            limit,
            read_buf: Vec::new(),
            engine: Engine::Empty,
            queue: VecDeque::new(),
            limits: PhaseLimits::DEFAULT,
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
        lock(&self.out).send(msg)
    }

    fn answer(&mut self, answer: Answer) -> Result<(), ProtocolError> {
        lock(&self.out).answer(answer)
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
        let Engine::Inline(backend) = &self.engine else {
            return Ok(());
        };
        let Some(plugin) = backend.watch_fd() else {
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
        match (stirred, &mut self.engine) {
            (true, Engine::Inline(backend)) => Err(Exit::Backend(backend.idle_failure())),
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
                if let Engine::Lanes(_) = self.engine {
                    return self.run_lanes();
                }
            }
            if let Some(next) = self.queue.pop_front() {
                self.run_one(next)?;
            }
        }
    }

    /// The event loop once lanes run the requests: read, queue, answer pings,
    /// until the supervisor hangs up, says Shutdown, or a lane fails. Then the
    /// queued requests are dropped and the running ones finish (and are
    /// answered) before it returns. No spinning here: the lanes need the cores.
    fn run_lanes(mut self) -> Result<(), Exit> {
        // Requests that arrived with the Load, before the lanes existed.
        if let Engine::Lanes(lanes) = &self.engine {
            for q in self.queue.drain(..) {
                lanes.submit(q);
            }
        }
        let ended = loop {
            if let Engine::Lanes(lanes) = &self.engine {
                if self.reader.buffer().is_empty() {
                    wait_readable_or(self.reader.get_ref().as_fd(), lanes.failed_fd());
                }
                if lanes.has_failed() {
                    break Ok(());
                }
            }
            let msg = match self.receive() {
                Ok(msg) => msg,
                Err(ProtocolError::Closed) => break Ok(()),
                Err(e) => break Err(e.into()),
            };
            match self.handle(msg) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let failure = match std::mem::replace(&mut self.engine, Engine::Empty) {
            Engine::Lanes(lanes) => lanes.stop(),
            _ => None,
        };
        // A lane's failure is the cause of whatever the loop saw.
        failure.map_or(ended, Err)
    }

    /// Handles one message; `false` means stop.
    fn handle(&mut self, msg: ToWorker) -> Result<bool, Exit> {
        match msg {
            ToWorker::Infer(req) => {
                let q = Queued::new(req).within(self.limits);
                match &self.engine {
                    Engine::Lanes(lanes) => lanes.submit(q),
                    _ => self.queue.push_back(q),
                }
            }
            ToWorker::Cancel { id } => {
                let removed = match &self.engine {
                    Engine::Lanes(lanes) => lanes.cancel(id),
                    _ => match self.queue.iter().position(|q| q.req.id == id) {
                        Some(at) => self.queue.remove(at).is_some(),
                        None => false,
                    },
                };
                if removed {
                    self.answer(refusal(
                        id,
                        InferErrorKind::Cancelled,
                        "cancelled before it ran",
                    ))?;
                }
            }
            ToWorker::Ping { seq } => {
                let check = match &mut self.engine {
                    Engine::Inline(backend) => match backend.health() {
                        Ok(check) => check,
                        Err(crate::backend::Failure::Fatal(why)) => return Err(Exit::Backend(why)),
                        Err(crate::backend::Failure::Request { message, .. }) => {
                            HealthCheck::Failed { message }
                        }
                    },
                    _ => HealthCheck::Undefined,
                };
                let in_flight = match &self.engine {
                    Engine::Lanes(lanes) => lanes.in_flight(),
                    _ => self.queue.len(),
                };
                let rss_bytes = stats::rss_bytes();
                let mut out = lock(&self.out);
                let (requests_served, requests_failed) = out.counts();
                let stats = WorkerStats {
                    rss_bytes,
                    requests_served,
                    requests_failed,
                    in_flight: in_flight as u32,
                };
                out.send(&FromWorker::Pong { seq, stats, check })?;
            }
            ToWorker::Load(req) => {
                let reply = match self.engine {
                    Engine::Empty => self.load(&req),
                    _ => FromWorker::LoadFailed(LoadFailed {
                        kind: LoadErrorKind::Protocol,
                        message: "already loaded".into(),
                    }),
                };
                self.send(&reply)?;
            }
            ToWorker::Shutdown => return Ok(false),
            ToWorker::Welcome { .. } | ToWorker::Refused { .. } => {}
        }
        Ok(true)
    }

    fn load(&mut self, req: &ward_protocol::LoadRequest) -> FromWorker {
        self.limits = req.phase_limits;
        let (serving, loaded) = match backend::load_for_serving(req, self.limit.get() as usize) {
            Ok(ok) => ok,
            Err(failed) => return FromWorker::LoadFailed(failed),
        };
        self.engine = match serving {
            Serving::Inline(backend) => Engine::Inline(backend),
            Serving::Lanes { narrow, wide } => {
                match Lanes::start(narrow, Some(wide), self.out.clone()) {
                    Ok(lanes) => Engine::Lanes(lanes),
                    Err(e) => {
                        return FromWorker::LoadFailed(LoadFailed {
                            kind: LoadErrorKind::Runtime,
                            message: format!("cannot start the worker's lanes: {e}"),
                        });
                    }
                }
            }
        };
        FromWorker::Loaded(loaded)
    }

    fn run_one(&mut self, q: Queued) -> Result<(), Exit> {
        let backend = match &mut self.engine {
            Engine::Inline(backend) => Some(backend),
            _ => None,
        };
        let answer = execute(backend, q)?;
        Ok(self.answer(answer)?)
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

/// Sleeps until `socket` or `other` is readable (or hung up).
fn wait_readable_or(socket: BorrowedFd<'_>, other: BorrowedFd<'_>) {
    let mut fds = [
        PollFd::new(socket, PollFlags::POLLIN),
        PollFd::new(other, PollFlags::POLLIN),
    ];
    while let Err(nix::errno::Errno::EINTR) = poll(&mut fds, PollTimeout::NONE) {}
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
