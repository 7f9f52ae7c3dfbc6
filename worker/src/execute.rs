//! What the event loop (`server.rs`) and the lanes (`lanes.rs`) share: a
//! queued request, running it on a backend, the socket's writing half that
//! both answer through, and why the worker stops. Both import this module and
//! neither needs the other's internals, so the lanes never call back up into
//! the loop.

use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ward_protocol::{
    FrameLimit, FromWorker, InferError, InferErrorKind, InferOk, InferRequest, PhaseLimits,
    ProtocolError, RequestId, write_message,
};

use crate::backend::phase;
use crate::backend::{Failure, Infer};

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum Exit {
    #[error("the supervisor refused the handshake: {0}")]
    Refused(String),
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),
    /// The backend died under a request (e.g. the plugin process exited).
    #[error("backend failure: {0}")]
    Backend(crate::backend::Fatal),
}

/// A request waiting to run.
pub(crate) struct Queued {
    pub req: InferRequest,
    pub deadline: Instant,
    /// Each phase's limit; `None` before the model is loaded (and in tests).
    pub limits: Option<PhaseLimits>,
}

impl Queued {
    pub fn new(req: InferRequest) -> Queued {
        let deadline = Instant::now() + Duration::from_micros(req.budget_us);
        Queued {
            req,
            deadline,
            limits: None,
        }
    }

    pub fn within(mut self, limits: PhaseLimits) -> Queued {
        self.limits = Some(limits);
        self
    }
}

/// A request's answer: `InferOk` or `InferErr`.
pub(crate) type Answer = Result<InferOk, InferError>;

/// An `InferErr` answer that the worker gives itself (cancelled, timed out,
/// nothing loaded), with no plugin exception behind it.
pub(crate) fn refusal(id: RequestId, kind: InferErrorKind, message: impl Into<String>) -> Answer {
    Err(InferError {
        id,
        kind,
        message: message.into(),
        exception: None,
    })
}

/// The socket's writing half and the answer counts, shared by the event loop
/// and the lanes: a frame is written whole under the lock.
pub(crate) struct Out<W> {
    writer: W,
    limit: FrameLimit,
    buf: Vec<u8>,
    served: u64,
    failed: u64,
}

impl<W: Write> Out<W> {
    pub fn new(writer: W, limit: FrameLimit) -> Out<W> {
        Out {
            writer,
            limit,
            buf: Vec::new(),
            served: 0,
            failed: 0,
        }
    }

    /// Answers sent so far: (served, failed).
    pub fn counts(&self) -> (u64, u64) {
        (self.served, self.failed)
    }

    pub fn send(&mut self, msg: &FromWorker) -> Result<(), ProtocolError> {
        write_message(&mut self.writer, msg, self.limit, &mut self.buf)
    }

    /// Sends a request's answer and counts it; an output too large for one
    /// frame becomes an `InvalidOutput` error.
    pub fn answer(&mut self, answer: Answer) -> Result<(), ProtocolError> {
        match answer {
            Ok(ok) => {
                let id = ok.id;
                match self.send(&FromWorker::InferOk(ok)) {
                    Ok(()) => {
                        self.served += 1;
                        Ok(())
                    }
                    Err(ProtocolError::FrameTooLarge { len, max }) => self.answer(refusal(
                        id,
                        InferErrorKind::InvalidOutput,
                        format!(
                            "the model's output ({len} bytes) exceeds the {max}-byte frame limit"
                        ),
                    )),
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                self.failed += 1;
                self.send(&FromWorker::InferErr(e))
            }
        }
    }
}

/// Locks `m`, whether or not a thread panicked while holding it (a panicking
/// lane ends the worker anyway; see `lanes.rs`). The worker's one lock helper.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs one queued request on `backend` (none: nothing is loaded yet): its
/// answer, or [`Exit::Backend`] when the backend failed fatally. A request
/// that carries the client's trace id is named in the worker's log (its
/// stderr, which the supervisor keeps as the version's log) when it starts
/// and ends, so that what the plugin prints in between is the request's.
pub(crate) fn execute<B: Infer + ?Sized>(
    backend: Option<&mut B>,
    mut q: Queued,
) -> Result<Answer, Exit> {
    let Some(trace) = q.req.trace_id.take() else {
        return run(backend, q);
    };
    let id = q.req.id.0;
    let started = Instant::now();
    eprintln!("ward-worker: request {id} trace_id={trace} started");
    let answer = run(backend, q);
    let how = match &answer {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => format!("{:?}: {}", e.kind, e.message),
        Err(e) => format!("fatal: {e}"),
    };
    eprintln!(
        "ward-worker: request {id} trace_id={trace} ended after {} us: {how}",
        started.elapsed().as_micros()
    );
    answer
}

fn run<B: Infer + ?Sized>(backend: Option<&mut B>, q: Queued) -> Result<Answer, Exit> {
    let id = q.req.id;
    if Instant::now() >= q.deadline {
        return Ok(refusal(
            id,
            InferErrorKind::Timeout,
            "the deadline passed before the request ran",
        ));
    }
    let Some(backend) = backend else {
        return Ok(refusal(id, InferErrorKind::Internal, "no model is loaded"));
    };
    let ran = match &q.limits {
        Some(limits) => backend
            .infer_within(q.req.input, limits)
            .and_then(|outcome| match phase::overrun(&outcome.timings, limits) {
                // It finished, but too late: the phase could not be
                // interrupted (see `phase`), and its result is dropped.
                Some(late) => Err(phase::exceeded(late, limits)),
                None => Ok(outcome),
            }),
        None => backend.infer(q.req.input),
    };
    match ran {
        Ok(mut outcome) => {
            let wanted = &q.req.outputs;
            if !wanted.is_empty() {
                if let Some(missing) = wanted
                    .iter()
                    .find(|n| !outcome.outputs.iter().any(|t| &t.name == *n))
                {
                    let names: Vec<&str> =
                        outcome.outputs.iter().map(|t| t.name.as_str()).collect();
                    return Ok(refusal(
                        id,
                        InferErrorKind::InvalidInput,
                        format!(
                            "unknown output {missing:?} (the model produces: {})",
                            names.join(", ")
                        ),
                    ));
                }
                outcome.outputs.retain(|t| wanted.contains(&t.name));
            }
            Ok(Ok(InferOk {
                id,
                outputs: outcome.outputs,
                structured: outcome.structured,
                timings: outcome.timings,
            }))
        }
        Err(Failure::Request {
            kind,
            message,
            exception,
        }) => Ok(Err(InferError {
            id,
            kind,
            message,
            exception,
        })),
        Err(Failure::Fatal(fatal)) => Err(Exit::Backend(fatal)),
    }
}
