//! Group commit for SQLite: many commits, one fsync.
//!
//! With `synchronous=FULL` every SQLite commit waits for its own fsync of the write-ahead log,
//! so writers queue behind one another's disk flushes. Here SQLite runs with
//! `synchronous=NORMAL` (WAL frames are written at commit but not flushed; SQLite still syncs
//! the WAL before each checkpoint, the database after it, and the WAL header when the log is
//! reused), and a request that must be durable before it is answered calls
//! [`Syncer::durable`] after its commit. One task flushes the log for every commit made before
//! the flush began: requests that commit while a flush is under way join the next one. A
//! flush of the log file covers every frame written to it, whichever connection wrote them,
//! so an answered write survives `kill -9` and power loss as it did with `FULL`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Flushes the SQLite write-ahead log for everyone waiting.
#[derive(Debug)]
pub struct Syncer {
    /// Tickets handed out: one per caller, after its commit.
    issued: AtomicU64,
    /// The highest ticket known to be on disk (`Err`: the last flush failed).
    flushed: watch::Sender<Result<u64, String>>,
    wake: Notify,
    /// The database file; its log is `<file>-wal`.
    database: PathBuf,
    /// Flushes done, for the metrics and the tests.
    flushes: AtomicU64,
}

impl Syncer {
    /// Starts the flushing task for the database file at `database`.
    pub fn start(database: PathBuf) -> Arc<Syncer> {
        let (flushed, _) = watch::channel(Ok(0));
        let s = Arc::new(Syncer {
            issued: AtomicU64::new(0),
            flushed,
            wake: Notify::new(),
            database,
            flushes: AtomicU64::new(0),
        });
        tokio::spawn(Arc::clone(&s).run());
        s
    }

    /// Returns once everything this process committed before the call is on disk.
    pub async fn durable(&self) -> Result<(), String> {
        let ticket = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rx = self.flushed.subscribe();
        self.wake.notify_one();
        loop {
            match &*rx.borrow_and_update() {
                Ok(done) if *done >= ticket => return Ok(()),
                Err(e) => {
                    // A flush failed after this caller's commit: its write may not be durable.
                    // (A later successful flush replaces the error.)
                    return Err(e.clone());
                }
                Ok(_) => {}
            }
            if rx.changed().await.is_err() {
                return Err("the database flusher has stopped".into());
            }
        }
    }

    async fn run(self: Arc<Self>) {
        loop {
            let target = self.issued.load(Ordering::SeqCst);
            let done = match &*self.flushed.borrow() {
                Ok(d) => *d,
                Err(_) => 0,
            };
            if target <= done {
                self.wake.notified().await;
                // Stop when nobody can ask any more (the store was dropped).
                if Arc::strong_count(&self) == 1 {
                    return;
                }
                continue;
            }
            // Every ticket up to `target` was taken after its commit returned, so the frames
            // of those commits are in the log before this flush starts.
            let paths = (self.log_file(), self.database.clone());
            let r = tokio::task::spawn_blocking(move || flush(&paths.0, &paths.1))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            match r {
                Ok(()) => {
                    self.flushes.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("telemental_sqlite_flushes_total").increment(1);
                    let _ = self.flushed.send_replace(Ok(target));
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not flush the SQLite write-ahead log");
                    let _ = self.flushed.send_replace(Err(e));
                    // Let waiters see the error before retrying with later tickets.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let _ = self.flushed.send_replace(Ok(done));
                }
            }
        }
    }

    /// Flushes done so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    fn log_file(&self) -> PathBuf {
        log_of(&self.database)
    }
}

/// The write-ahead log of the SQLite database file `database`: `<file>-wal`.
pub(crate) fn log_of(database: &std::path::Path) -> PathBuf {
    let mut p = database.to_path_buf().into_os_string();
    p.push("-wal");
    PathBuf::from(p)
}

/// Flushes the log; when there is none (every frame was checkpointed and the log removed,
/// which SQLite follows with a flush of the database file), flushes the database file.
pub(crate) fn flush(log: &std::path::Path, database: &std::path::Path) -> Result<(), String> {
    let file = match std::fs::File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::File::open(database)
            .map_err(|e| format!("open {}: {e}", database.display()))?,
        Err(e) => return Err(format!("open {}: {e}", log.display())),
    };
    file.sync_data().map_err(|e| format!("fsync: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn callers_waiting_together_share_flushes_and_each_waits_for_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        std::fs::write(&db, b"x").unwrap();
        let s = Syncer::start(db.clone());
        s.durable().await.unwrap();
        let after_one = s.flushes();
        assert!(after_one >= 1, "a caller waits for a flush of its own");
        s.durable().await.unwrap();
        assert!(
            s.flushes() > after_one,
            "a later caller is not served by an earlier flush"
        );
        let before = s.flushes();
        let calls = 64;
        let all = (0..calls).map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.durable().await })
        });
        for r in futures_util::future::join_all(all).await {
            r.unwrap().unwrap();
        }
        let used = s.flushes() - before;
        assert!(
            used >= 1 && used < calls,
            "{used} flushes for {calls} callers"
        );
        // The log, once SQLite has one, is what is flushed.
        std::fs::write(dir.path().join("t.db-wal"), b"y").unwrap();
        s.durable().await.unwrap();
    }
}
