//! The tokio runtime the library owns.
//!
//! Every call that talks to the node runs as a task on it, whatever calls
//! it (Kotlin's coroutines, Swift's tasks, Python's asyncio loop, or a
//! blocking thread): the connector transport's own tasks need a tokio
//! runtime that outlives them, and a foreign caller that cancels its call
//! (drops the future) does not cut a send or an acknowledgement in half.
//! The runtime starts on the first call and lives as long as the process.
//!
//! # Calls into the foreign language
//!
//! An async call completes by waking the foreign side's future: UniFFI's
//! waker calls a callback of the bindings (for Python, one that takes the
//! GIL and schedules the coroutine's resumption on its event loop), from
//! whichever thread woke it, usually one of the library's. CPython ends a
//! thread that reaches for the GIL once the interpreter is finalizing with
//! `pthread_exit`, and on a thread of the library that aborts the whole
//! process ("FATAL: exception not rethrown"). The race is real: the thread
//! that resumed the last coroutine is still inside the callback (it gives
//! the GIL up to write to the event loop's wake-up socket, and needs it
//! back) when the main thread finishes `asyncio.run` and finalizes.
//!
//! So every waker the library hands to a foreign future goes through
//! [`CALLBACKS`]: it counts the wakes in progress, and once
//! [`stop_callbacks`] was called it forwards none. `stop_callbacks` (a
//! blocking call, which releases the GIL) waits for the wakes in progress
//! to return; a Python program registers it with `atexit`, which runs
//! before finalization.

use crate::error::ConfidantError;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Worker threads: the node's actors run on threads of their own; these
/// only carry the gRPC client and the calls' glue.
const WORKERS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

fn runtime() -> Result<&'static Runtime, ConfidantError> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKERS)
                .thread_name("confidant-ffi")
                .enable_all()
                .build()
                .map_err(|error| format!("cannot start the library's tokio runtime: {error}"))
        })
        .as_ref()
        .map_err(|error| ConfidantError::internal(error.clone()))
}

/// Runs `future` on the library's runtime and waits for it from any
/// executor (its wake-ups gated by [`CALLBACKS`]). A panic inside is an
/// `Internal` error, never an unwind into the caller's language.
pub(crate) async fn run<T, F>(future: F) -> Result<T, ConfidantError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, ConfidantError>> + Send + 'static,
{
    let task = runtime()?.spawn(future);
    match gated(task).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => Err(ConfidantError::internal(format!(
            "a task of the library panicked: {}",
            panic_text(error.into_panic())
        ))),
        Err(_) => Err(ConfidantError::Closed),
    }
}

/// The wakes of foreign futures: how many are in progress, and whether
/// they are still forwarded.
#[derive(Debug)]
pub(crate) struct Callbacks {
    in_progress: AtomicUsize,
    stopped: AtomicBool,
}

/// The process's one [`Callbacks`]: the foreign language's futures are
/// the process's.
pub(crate) static CALLBACKS: Callbacks = Callbacks::new();

/// How long [`stop_callbacks`] waits for the wakes in progress at most. A
/// wake in progress only waits for the foreign side's lock (the GIL), which
/// the blocking call released: it returns in microseconds.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Callbacks {
    pub(crate) const fn new() -> Self {
        Self {
            in_progress: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    /// Forwards a wake to `waker` unless stopped, counted while it runs.
    fn wake(&self, waker: &Waker) {
        // Counted before the check, so that `stop` (which sets `stopped`,
        // then reads the count) either sees this wake in progress or makes
        // it see `stopped`.
        self.in_progress.fetch_add(1, Ordering::SeqCst);
        if !self.stopped.load(Ordering::SeqCst) {
            waker.wake_by_ref();
        }
        self.in_progress.fetch_sub(1, Ordering::SeqCst);
    }

    /// Forwards no wake from now on, and waits (at most `limit`) for those
    /// in progress to return. Returns whether none was left in progress.
    pub(crate) fn stop(&self, limit: Duration) -> bool {
        self.stopped.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + limit;
        while self.in_progress.load(Ordering::SeqCst) != 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }
}

/// A foreign future's waker, behind [`Callbacks`].
struct GatedWaker {
    callbacks: &'static Callbacks,
    waker: Waker,
}

impl Wake for GatedWaker {
    fn wake(self: Arc<Self>) {
        self.callbacks.wake(&self.waker);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.callbacks.wake(&self.waker);
    }
}

/// `future`, polled with a waker that [`CALLBACKS`] gates. Every future an
/// exported async function awaits goes through here (`run` does it).
pub(crate) async fn gated<F: Future>(future: F) -> F::Output {
    gated_by(&CALLBACKS, future).await
}

async fn gated_by<F: Future>(callbacks: &'static Callbacks, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|context| {
        let waker = Waker::from(Arc::new(GatedWaker {
            callbacks,
            waker: context.waker().clone(),
        }));
        future.as_mut().poll(&mut Context::from_waker(&waker))
    })
    .await
}

/// Makes the library call into the foreign language no more, for a
/// program about to exit: no async call still waiting completes after it
/// (they stay pending for ever), and it returns once the wake-ups in
/// progress on the library's threads have returned (it waits 5 s at most;
/// `false`: one was still running then). Nodes are not shut down by it:
/// call `shutdown` first, as ever.
///
/// Python must call it before the interpreter finalizes (CPython kills a
/// thread that reaches for the GIL during finalization, which aborts the
/// process): `atexit.register(confidant_ffi.stop_callbacks)` once, after
/// the import. Kotlin and Swift need not call it.
#[uniffi::export]
pub fn stop_callbacks() -> bool {
    CALLBACKS.stop(STOP_WAIT)
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_panic_in_a_task_is_an_internal_error() {
        let outcome = futures_lite_block_on(run(async {
            if WORKERS > 0 {
                panic!("boom");
            }
            Ok(())
        }));
        match outcome {
            Err(ConfidantError::Internal { message }) => assert!(message.contains("boom")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_task_runs_without_a_runtime_of_the_caller() {
        let outcome = futures_lite_block_on(run(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            Ok(7)
        }));
        assert_eq!(outcome, Ok(7));
    }

    /// A waker that counts its wakes and, if told, holds each one until
    /// released (a foreign callback waiting for the GIL).
    #[derive(Default)]
    struct Held {
        wakes: AtomicUsize,
        hold: AtomicBool,
        returned: AtomicBool,
    }

    impl Wake for Held {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            let start = Instant::now();
            while self.hold.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.returned.store(true, Ordering::SeqCst);
        }
    }

    fn gated_waker(callbacks: &'static Callbacks, held: &Arc<Held>) -> Waker {
        Waker::from(Arc::new(GatedWaker {
            callbacks,
            waker: Waker::from(Arc::clone(held)),
        }))
    }

    #[test]
    fn wakes_are_forwarded_until_stopped_and_none_after() {
        static LOCAL: Callbacks = Callbacks::new();
        let held = Arc::new(Held::default());
        let waker = gated_waker(&LOCAL, &held);
        waker.wake_by_ref();
        waker.wake_by_ref();
        assert_eq!(held.wakes.load(Ordering::SeqCst), 2);
        assert!(LOCAL.stop(Duration::from_secs(1)));
        waker.wake_by_ref();
        waker.wake();
        assert_eq!(held.wakes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn stop_waits_for_a_wake_in_progress_to_return() {
        static LOCAL: Callbacks = Callbacks::new();
        let held = Arc::new(Held::default());
        held.hold.store(true, Ordering::SeqCst);
        let waker = gated_waker(&LOCAL, &held);
        let waking = std::thread::spawn(move || waker.wake());
        let start = Instant::now();
        while held.wakes.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            held.wakes.load(Ordering::SeqCst),
            1,
            "the wake never started"
        );
        // Still held: stop gives up after its limit and says so.
        assert!(!LOCAL.stop(Duration::from_millis(20)));
        assert!(!held.returned.load(Ordering::SeqCst));
        // Released while stop waits: stop returns once the wake returned.
        let release = Arc::clone(&held);
        let releasing = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            release.hold.store(false, Ordering::SeqCst);
        });
        assert!(LOCAL.stop(Duration::from_secs(10)));
        assert!(held.returned.load(Ordering::SeqCst));
        waking.join().unwrap();
        releasing.join().unwrap();
    }

    #[test]
    fn a_gated_future_completes_through_its_gated_waker() {
        static LOCAL: Callbacks = Callbacks::new();
        let task = runtime().unwrap().spawn(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            7
        });
        let outcome = futures_lite_block_on(gated_by(&LOCAL, task));
        assert_eq!(outcome.unwrap(), 7);
    }

    /// Polls a future on this thread, with no tokio runtime entered: what a
    /// foreign executor does.
    fn futures_lite_block_on<F: Future>(future: F) -> F::Output {
        let thread = std::thread::current();
        let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(thread)));
        let mut context = std::task::Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return output;
            }
            std::thread::park_timeout(std::time::Duration::from_millis(50));
        }
    }

    struct Unpark(std::thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
}
