//! The tokio runtime the library owns.
//!
//! Every call that talks to the node runs as a task on it, whatever calls
//! it (Kotlin's coroutines, Swift's tasks, Python's asyncio loop, or a
//! blocking thread): the connector transport's own tasks need a tokio
//! runtime that outlives them, and a foreign caller that cancels its call
//! (drops the future) does not cut a send or an acknowledgement in half.
//! The runtime starts on the first call and lives as long as the process.

use crate::error::ConfidantError;
use std::future::Future;
use std::sync::OnceLock;
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
/// executor. A panic inside is an `Internal` error, never an unwind into
/// the caller's language.
pub(crate) async fn run<T, F>(future: F) -> Result<T, ConfidantError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, ConfidantError>> + Send + 'static,
{
    let task = runtime()?.spawn(future);
    match task.await {
        Ok(result) => result,
        Err(error) if error.is_panic() => Err(ConfidantError::internal(format!(
            "a task of the library panicked: {}",
            panic_text(error.into_panic())
        ))),
        Err(_) => Err(ConfidantError::Closed),
    }
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
    #![allow(clippy::panic)]
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
