//! Lanes: several sessions of one model serving one worker's requests in
//! parallel, each on its own thread.
//!
//! The event loop (`server`) reads the socket and [`Lanes::submit`]s each
//! request to one shared queue, under a mutex; every lane takes the oldest
//! waiting request, runs it on its own backend and writes the answer through
//! the shared writer as soon as it is done, so answers leave out of order and
//! the supervisor matches them by id. Each lane sleeps on its own condition
//! variable, and a new request wakes the most recently idle lane, so that at
//! low load one thread, with warm caches, serves request after request.
//!
//! A request that finds the worker otherwise idle (nothing else queued or
//! running) runs instead on the *wide* backend, which has all the threads:
//! alone, it is answered as fast as by one multi-threaded session; under load
//! every request runs on a single-threaded lane. A request that arrives while
//! the wide backend runs starts on a free lane at once (holding it back until
//! the wide run ended measured worse at concurrency 2: 196–227 req/s against
//! 252–297 for cnn on a 2-core host).
//!
//! The event loop keeps answering `Cancel` (a still-queued request is removed
//! and answered `Cancelled`; a running one cannot be interrupted, as on the
//! inline path), `Ping` (`in_flight` counts queued and running requests) and
//! `Shutdown`. A request whose deadline passed before a lane took it is
//! answered `Timeout` without running.
//!
//! A lane whose backend fails fatally (or whose answer cannot be written)
//! records the failure, stops the other lanes from taking more work and makes
//! [`Lanes::failed_fd`] readable, which wakes the event loop: the worker then
//! exits non-zero as it would on the inline path. A panicking lane counts as a
//! failure too.
//!
//! Each lane owns a whole backend, and the wide one is one more: for ONNX,
//! sessions that share their pre-packed weights but each hold their own graph,
//! initializers and buffers, so lanes take more memory than a single session
//! (cnn, 0.9 MB of weights, with two lanes: ~43 MiB resident against ~37).

use std::collections::VecDeque;
use std::io::{PipeReader, PipeWriter, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use ward_protocol::RequestId;

use crate::backend::Infer;
use crate::execute::{Exit, Out, Queued, execute, lock};

/// A lane runs ONNX Runtime on its own stack: as much as the main thread's.
const LANE_STACK: usize = 8 << 20;

pub struct Lanes {
    pool: Arc<Pool>,
    threads: Vec<JoinHandle<()>>,
    failed: PipeReader,
}

struct Pool {
    state: Mutex<State>,
    /// One per lane: signalled when that lane is handed a request, or when
    /// the lanes must stop.
    wake: Vec<Condvar>,
    /// Written to once when a lane fails.
    failed: PipeWriter,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    running: usize,
    /// Lanes waiting for work, the most recently idle last: a new request
    /// wakes that one, so that at low load the same thread, with warm caches,
    /// serves one request after another.
    idle: Vec<usize>,
    stopping: bool,
    failure: Option<Exit>,
}

impl Pool {
    fn wake_all(&self) {
        for lane in &self.wake {
            lane.notify_one();
        }
    }

    fn fail(&self, why: Exit) {
        let mut state = lock(&self.state);
        state.failure.get_or_insert(why);
        state.stopping = true;
        drop(state);
        self.wake_all();
        // The event loop needs only to see it readable; a full pipe is as good.
        let _ = (&self.failed).write(&[1]);
    }
}

/// Marks the lane's failure if its thread unwinds.
struct PanicGuard<'a>(&'a Pool);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail(Exit::Backend(crate::backend::Fatal::new(
                "a lane of the worker panicked",
            )));
        }
    }
}

impl Lanes {
    /// Starts one lane per `narrow` backend, sharing `wide` (if any) for
    /// requests that are alone, all answering through `out`.
    pub fn start<B, W>(
        narrow: Vec<B>,
        wide: Option<B>,
        out: Arc<Mutex<Out<W>>>,
    ) -> std::io::Result<Lanes>
    where
        B: Infer + Send + 'static,
        W: Write + Send + 'static,
    {
        let (failed, failed_writer) = std::io::pipe()?;
        let pool = Arc::new(Pool {
            state: Mutex::new(State::default()),
            wake: (0..narrow.len()).map(|_| Condvar::new()).collect(),
            failed: failed_writer,
        });
        let mut lanes = Lanes {
            pool,
            threads: Vec::with_capacity(narrow.len()),
            failed,
        };
        let wide = wide.map(|w| Arc::new(Mutex::new(w)));
        for (i, backend) in narrow.into_iter().enumerate() {
            let pool = lanes.pool.clone();
            let wide = wide.clone();
            let out = out.clone();
            let thread = std::thread::Builder::new()
                .name(format!("lane-{i}"))
                .stack_size(LANE_STACK)
                .spawn(move || lane(i, backend, wide.as_deref(), &pool, &out))?;
            lanes.threads.push(thread);
        }
        Ok(lanes)
    }

    /// Queues a request for the next free lane.
    pub fn submit(&self, q: Queued) {
        let mut state = lock(&self.pool.state);
        state.queue.push_back(q);
        let lane = state.idle.pop();
        drop(state);
        if let Some(lane) = lane {
            self.pool.wake[lane].notify_one();
        }
    }

    /// Removes a request that no lane has taken yet; `false` when it is
    /// running, answered or unknown.
    pub fn cancel(&self, id: RequestId) -> bool {
        let mut state = lock(&self.pool.state);
        match state.queue.iter().position(|q| q.req.id == id) {
            Some(at) => state.queue.remove(at).is_some(),
            None => false,
        }
    }

    /// Requests queued or running.
    pub fn in_flight(&self) -> usize {
        let state = lock(&self.pool.state);
        state.queue.len() + state.running
    }

    /// Becomes readable when a lane has failed.
    pub fn failed_fd(&self) -> BorrowedFd<'_> {
        self.failed.as_fd()
    }

    pub fn has_failed(&self) -> bool {
        lock(&self.pool.state).failure.is_some()
    }

    /// Drops the queued requests, lets the running ones finish and be
    /// answered, and joins the lanes; returns the first lane's failure, if any.
    pub fn stop(mut self) -> Option<Exit> {
        self.halt();
        lock(&self.pool.state).failure.take()
    }

    fn halt(&mut self) {
        {
            let mut state = lock(&self.pool.state);
            state.stopping = true;
            state.queue.clear();
        }
        self.pool.wake_all();
        for thread in self.threads.drain(..) {
            // A panic was recorded as the failure by the lane's guard.
            let _ = thread.join();
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One lane: takes the oldest queued request, runs it, answers, until told
/// to stop. A request that has the worker to itself (nothing else queued or
/// running) runs on the wide backend, if there is one.
fn lane<B: Infer, W: Write>(
    me: usize,
    mut backend: B,
    wide: Option<&Mutex<B>>,
    pool: &Pool,
    out: &Mutex<Out<W>>,
) {
    let _guard = PanicGuard(pool);
    loop {
        let (next, alone) = {
            let mut state = lock(&pool.state);
            loop {
                if state.stopping {
                    return;
                }
                if let Some(q) = state.queue.pop_front() {
                    let alone = state.running == 0 && state.queue.is_empty();
                    state.running += 1;
                    break (q, alone);
                }
                state.idle.push(me);
                state = pool.wake[me]
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // Handed a request, told to stop, or woken spuriously: either
                // way no longer idle, so no request is ever handed to a lane
                // that is not waiting.
                state.idle.retain(|&lane| lane != me);
            }
        };
        // Nothing else runs when a request is alone, so the wide backend is
        // free then; `try_lock` only guards against a panicked holder.
        let ran = match wide.filter(|_| alone).and_then(|w| w.try_lock().ok()) {
            Some(mut wide) => execute(Some(&mut *wide), next),
            None => execute(Some(&mut backend), next),
        };
        // No longer running once its answer is on its way: a `Ping` read after
        // the answer never counts it.
        lock(&pool.state).running -= 1;
        let sent = ran.and_then(|answer| lock(out).answer(answer).map_err(Exit::from));
        if let Err(why) = sent {
            pool.fail(why);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use ward_protocol::{
        FrameLimit, FromWorker, InferErrorKind, InferInput, InferRequest, Tensor, Timings,
        read_message,
    };

    use super::*;
    use crate::backend::{Failure, Outcome};

    /// A stand-in backend: input `[ms, value]` sleeps `ms` and answers `y =
    /// value` and `wide` = whether it is the wide one; `ms` < 0 fails
    /// fatally, NaN panics. Counts its runs.
    struct Fake {
        runs: Arc<AtomicUsize>,
        /// (value, started) for each start and end of a run, in order.
        log: Arc<Mutex<Vec<(f32, bool)>>>,
        wide: bool,
    }

    impl Infer for Fake {
        fn infer(&mut self, input: InferInput) -> Result<Outcome, Failure> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let InferInput::Tensors(t) = input else {
                return Err(Failure::invalid("tensors only"));
            };
            let x = t[0].to_f32().unwrap();
            let (ms, value) = (x[0], x[1]);
            assert!(!ms.is_nan(), "asked to panic");
            if ms < 0.0 {
                return Err(Failure::Fatal(crate::backend::Fatal::new(
                    "the fake backend died",
                )));
            }
            lock(&self.log).push((value, true));
            std::thread::sleep(Duration::from_millis(ms as u64));
            lock(&self.log).push((value, false));
            let wide = if self.wide { 1.0 } else { 0.0 };
            Ok(Outcome {
                outputs: vec![
                    Tensor::from_f32("y", vec![1], &[value]),
                    Tensor::from_f32("wide", vec![1], &[wide]),
                ],
                structured: None,
                timings: Timings::default(),
            })
        }
    }

    struct Rig {
        lanes: Option<Lanes>,
        peer: UnixStream,
        runs: Arc<AtomicUsize>,
        log: Arc<Mutex<Vec<(f32, bool)>>>,
        buf: Vec<u8>,
    }

    /// `n` lanes and no wide backend.
    fn rig(n: usize) -> Rig {
        rig_with(n, false)
    }

    fn rig_with(n: usize, with_wide: bool) -> Rig {
        let (ours, peer) = UnixStream::pair().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let fake = |wide| Fake {
            runs: runs.clone(),
            log: log.clone(),
            wide,
        };
        let narrow = (0..n).map(|_| fake(false)).collect();
        let out = Arc::new(Mutex::new(Out::new(ours, FrameLimit::DEFAULT)));
        Rig {
            lanes: Some(Lanes::start(narrow, with_wide.then(|| fake(true)), out).unwrap()),
            peer,
            runs,
            log,
            buf: Vec::new(),
        }
    }

    fn request(id: u64, ms: f32, value: f32, budget: Duration) -> Queued {
        Queued::new(InferRequest {
            id: RequestId(id),
            budget_us: budget.as_micros() as u64,
            input: InferInput::Tensors(vec![Tensor::from_f32("x", vec![2], &[ms, value])]),
            outputs: vec![],
            trace_id: None,
        })
    }

    impl Rig {
        fn lanes(&self) -> &Lanes {
            self.lanes.as_ref().unwrap()
        }

        fn submit(&self, id: u64, ms: f32, value: f32) {
            self.lanes()
                .submit(request(id, ms, value, Duration::from_secs(10)));
        }

        /// The next answer: (id, Ok(value) | Err(kind)).
        fn next(&mut self) -> (u64, Result<f32, InferErrorKind>) {
            let (id, answer) = self.next_from();
            (id, answer.map(|(value, _)| value))
        }

        /// The next answer, with whether the wide backend gave it.
        fn next_from(&mut self) -> (u64, Result<(f32, bool), InferErrorKind>) {
            match read_message(&mut self.peer, FrameLimit::DEFAULT, &mut self.buf).unwrap() {
                FromWorker::InferOk(ok) => {
                    let value = ok.outputs[0].to_f32().unwrap()[0];
                    let wide = ok.outputs[1].to_f32().unwrap()[0] == 1.0;
                    (ok.id.0, Ok((value, wide)))
                }
                FromWorker::InferErr(e) => (e.id.0, Err(e.kind)),
                other => panic!("unexpected {other:?}"),
            }
        }

        /// Once the lanes are gone, so is the last handle on the writer: the
        /// socket ends with nothing more on it.
        fn ends(&mut self) -> bool {
            matches!(
                read_message::<FromWorker>(&mut self.peer, FrameLimit::DEFAULT, &mut self.buf),
                Err(ward_protocol::ProtocolError::Closed)
            )
        }

        /// Waits until `n` requests are running (taken by a lane).
        fn wait_running(&self, n: usize) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while lock(&self.lanes().pool.state).running < n {
                assert!(Instant::now() < deadline, "the lanes never took the work");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn answers_leave_as_each_lane_finishes() {
        let mut r = rig(2);
        r.submit(1, 300.0, 10.0);
        r.wait_running(1);
        r.submit(2, 0.0, 20.0);
        // The second overtakes the first on the other lane.
        assert_eq!(r.next(), (2, Ok(20.0)));
        assert_eq!(r.next(), (1, Ok(10.0)));
        // Many at once: every one answered exactly once, with its own value.
        for id in 10..40 {
            r.submit(id, (id % 3) as f32, id as f32 * 0.5);
        }
        let mut seen: Vec<u64> = (10..40)
            .map(|_| {
                let (id, v) = r.next();
                assert_eq!(v, Ok(id as f32 * 0.5));
                id
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (10..40).collect::<Vec<_>>());
        assert_eq!(r.lanes().in_flight(), 0);
        assert!(r.lanes.take().unwrap().stop().is_none());
    }

    #[test]
    fn a_request_alone_runs_wide_and_the_others_on_lanes() {
        let mut r = rig_with(2, true);
        r.submit(1, 0.0, 1.0);
        assert_eq!(r.next_from(), (1, Ok((1.0, true))), "alone: wide");
        // One that arrives while the wide one runs starts on a lane at once.
        r.submit(2, 200.0, 2.0);
        r.wait_running(1);
        r.submit(3, 0.0, 3.0);
        assert_eq!(r.next_from(), (3, Ok((3.0, false))));
        assert_eq!(r.next_from(), (2, Ok((2.0, true))));
        // Behind a long one, a stream of short ones all run on the free lane.
        r.submit(4, 300.0, 4.0);
        r.wait_running(1);
        for id in 10..20 {
            r.submit(id, 2.0, id as f32);
        }
        for id in 10..20 {
            assert_eq!(r.next_from(), (id, Ok((id as f32, false))));
        }
        assert_eq!(r.next_from(), (4, Ok((4.0, true))));
        let log = lock(&r.log).clone();
        let at = |entry| log.iter().position(|e| *e == entry).unwrap();
        assert!(at((10.0, true)) < at((4.0, false)), "in parallel: {log:?}");
        // Without a wide backend, a lone request runs on a lane.
        let mut r = rig(2);
        r.submit(6, 0.0, 6.0);
        assert_eq!(r.next_from(), (6, Ok((6.0, false))));
    }

    #[test]
    fn queued_requests_are_counted_and_can_be_cancelled_running_ones_not() {
        let mut r = rig(2);
        r.submit(1, 300.0, 1.0);
        r.submit(2, 300.0, 2.0);
        r.wait_running(2);
        r.submit(3, 0.0, 3.0);
        r.submit(4, 0.0, 4.0);
        assert_eq!(r.lanes().in_flight(), 4, "two running, two queued");
        assert!(r.lanes().cancel(RequestId(3)));
        assert!(!r.lanes().cancel(RequestId(3)), "already gone");
        assert!(!r.lanes().cancel(RequestId(1)), "running");
        assert!(!r.lanes().cancel(RequestId(99)), "unknown");
        assert_eq!(r.lanes().in_flight(), 3);
        let mut got: Vec<_> = (0..3).map(|_| r.next()).collect();
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(got, [(1, Ok(1.0)), (2, Ok(2.0)), (4, Ok(4.0))]);
        assert_eq!(
            r.runs.load(Ordering::SeqCst),
            3,
            "the cancelled one never ran"
        );
    }

    #[test]
    fn a_spent_deadline_times_out_without_running() {
        let mut r = rig(2);
        r.lanes().submit(request(1, 0.0, 1.0, Duration::ZERO));
        assert_eq!(r.next(), (1, Err(InferErrorKind::Timeout)));
        assert_eq!(r.runs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn stop_finishes_and_answers_the_running_and_drops_the_queued() {
        let mut r = rig(2);
        r.submit(1, 200.0, 1.0);
        r.submit(2, 200.0, 2.0);
        r.wait_running(2);
        r.submit(3, 0.0, 3.0);
        r.submit(4, 0.0, 4.0);
        assert!(r.lanes.take().unwrap().stop().is_none());
        let mut got = vec![r.next(), r.next()];
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(got, [(1, Ok(1.0)), (2, Ok(2.0))]);
        assert!(r.ends(), "the queued ones were dropped unanswered");
        assert_eq!(r.runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_fatal_failure_wakes_the_event_loop_and_ends_the_worker() {
        let mut r = rig(2);
        r.submit(1, 200.0, 1.0);
        r.wait_running(1);
        r.submit(2, -1.0, 0.0);
        let mut fds = [PollFd::new(r.lanes().failed_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::from(5000u16)).unwrap(), 1);
        assert!(r.lanes().has_failed());
        r.submit(3, 0.0, 3.0);
        match r.lanes.take().unwrap().stop() {
            Some(Exit::Backend(why)) => assert_eq!(why.message, "the fake backend died"),
            other => panic!("expected a backend failure, got {other:?}"),
        }
        // The running request still finished; the fatal one and the one after
        // it were never answered.
        assert_eq!(r.next(), (1, Ok(1.0)));
        assert!(r.ends());
    }

    #[test]
    fn a_panicking_lane_is_a_failure() {
        let r = rig(1);
        r.submit(1, f32::NAN, 0.0);
        let mut fds = [PollFd::new(r.lanes().failed_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::from(5000u16)).unwrap(), 1);
        let mut r = r;
        match r.lanes.take().unwrap().stop() {
            Some(Exit::Backend(why)) => assert!(why.message.contains("panicked"), "{why}"),
            other => panic!("expected a backend failure, got {other:?}"),
        }
    }
}
