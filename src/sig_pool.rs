//! ECDSA signature checks off the HTTP workers, on a few threads of their own taking them in
//! order.
//!
//! An ES384 check is about 0.18 ms of CPU, half of an EHR's CDS Hooks call. Done on the actix
//! worker that read the request, it held that worker while the answers of other calls (their
//! group commit done, only the cards left to send) waited behind it: each worker runs its
//! connections' tasks in turn, so a call whose commit had come back queued behind every new
//! call that had arrived meanwhile. Here the workers hand the check to this pool and go on
//! reading requests and sending answers; the pool's threads (one per core) take the checks
//! first come, first served. Measured at 64 saturating connections, the p99 of a CDS call fell
//! by a fifth at the same throughput (README, "Signature checks on a pool of their own"). RSA
//! checks are cheaper than the hand-off and stay on the worker (`Authenticator::verify_external`).
//!
//! The queue is not bounded here: each HTTP/1.1 connection has at most one request in
//! progress, so the checks waiting are bounded by the service's connection cap.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, LazyLock, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The pool's queue; its threads start with the first check.
static QUEUE: LazyLock<Option<Sender<Job>>> = LazyLock::new(|| start(threads()));

/// One thread per core: the checks are pure CPU work.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn start(threads: usize) -> Option<Sender<Job>> {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let mut started = 0;
    for i in 0..threads {
        let rx = Arc::clone(&rx);
        let spawned = std::thread::Builder::new()
            .name(format!("telemental-sig-{i}"))
            .spawn(move || work(&rx));
        match spawned {
            Ok(_) => started += 1,
            Err(e) => tracing::warn!(error = %e, "could not start a signature-check thread"),
        }
    }
    (started > 0).then_some(tx)
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, not while running it.
        let next = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = next else { return };
        // A job that panics drops its reply (its caller gets `None`); the thread goes on.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// Queues `job` on the pool without waiting for it (work to have done before it is needed);
/// runs it here if the pool's threads could not be started.
pub fn submit(job: impl FnOnce() + Send + 'static) {
    match QUEUE.as_ref() {
        Some(queue) => {
            // The receiving side lives as long as the pool's threads, which never end.
            let _ = queue.send(Box::new(job));
        }
        None => {
            let _ = catch_unwind(AssertUnwindSafe(job));
        }
    }
}

/// Runs `check` on the pool and returns its result; `None` only if it panicked (or the pool's
/// threads could not be started, in which case it runs here, on the caller's thread).
pub async fn run<T, F>(check: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    // A check that panics drops `reply`, and so answers `None`.
    let (reply, answer) = tokio::sync::oneshot::channel();
    submit(move || {
        let _ = reply.send(check());
    });
    answer.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_check_runs_on_a_pool_thread_and_its_result_comes_back() {
        let caller = std::thread::current().id();
        let (value, thread) = run(|| {
            let t = std::thread::current();
            (6 * 7, (t.id(), t.name().map(str::to_owned)))
        })
        .await
        .unwrap();
        assert_eq!(value, 42);
        assert_ne!(thread.0, caller);
        assert!(thread.1.unwrap().starts_with("telemental-sig-"));
    }

    #[test]
    fn submitted_work_runs_on_a_pool_thread_without_a_caller_waiting() {
        let (tx, rx) = std::sync::mpsc::channel();
        submit(move || {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        let name = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert!(name.unwrap().starts_with("telemental-sig-"));
    }

    #[tokio::test]
    async fn a_check_that_panics_answers_none_and_the_pool_goes_on() {
        // More panics than threads: were a panic to end its thread, the pool would be empty.
        for _ in 0..threads() + 2 {
            let r: Option<u8> = run(|| panic!("a broken check")).await;
            assert_eq!(r, None);
        }
        assert_eq!(run(|| "still here").await, Some("still here"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_checks_at_once_each_get_their_own_result() {
        let calls = (0..200u64).map(|i| tokio::spawn(run(move || i * i)));
        let results = futures_util::future::join_all(calls).await;
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.unwrap(), Some((i * i) as u64));
        }
    }
}
