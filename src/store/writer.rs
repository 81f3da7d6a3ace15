//! Group commit. What reads must write before they are answered (the audit rows of every
//! read and denial, a CDS call's token id refusing a replay, a recommendation's counts for the
//! equity report) and, on SQLite, the record changes of writes (a plan or protocol created or
//! updated, a session check, a referral) are written by one task: whatever requests are
//! waiting go into one transaction, flushed once, and each is answered once that flush is
//! done. Done one transaction per request, requests queue on the database's commit (on SQLite,
//! on its single writer lock, then on a flush each).
//!
//! Each change runs under a savepoint of its own, so one that fails (a conflict, a version
//! that moved, a constraint) is rolled back alone and answered with its error, and the others
//! in its batch commit. On an SQLite file, a batch without changes is stepped by the writer
//! itself on a connection of its own (`Direct`), which flushes the log itself before the batch
//! is answered; otherwise the reads' rows go in with one multi-row statement per table
//! (`write`), and the batch waits for the shared flush (`Store::durable`). Audit rows, of
//! reads and of changes, are linked into their tenants' hash chains as they are written (see
//! migration 0060). On PostgreSQL, which groups concurrent commits itself, changes keep a
//! transaction each (the background sealer links their audit rows).

use super::{audit, on_db, positional, AuditEntry, DbError, Store, Ts};
use crate::domain::report::RecommendationTally;
use futures_util::future::{BoxFuture, FutureExt};
use sqlx::SqliteConnection;
use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Most calls written in one transaction.
const MAX_BATCH: usize = 256;

/// A token id to record: `(issuer, jti)` until `keep_until`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeenToken {
    pub issuer: String,
    pub jti: String,
    pub keep_until: Ts,
}

/// Answers a change once its batch is on disk (`Ok`) or failed (`Err`, why).
type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A change's statements, run on the batch's transaction under `Savepoint`: whether they
/// succeeded, whether the savepoint began, and how to answer the request.
type Work = Box<
    dyn for<'c> FnOnce(&'c mut SqliteConnection, Savepoint) -> BoxFuture<'c, (bool, bool, Deliver)>
        + Send,
>;

enum Reply {
    /// What reads write: answered with whether the token (if any) was fresh.
    Read(oneshot::Sender<Result<bool, String>>),
    /// A change not yet run.
    Change(Work),
    /// A change that ran; `ok`: it is kept (and its audit rows written).
    Ran { ok: bool, deliver: Deliver },
    /// A change dropped unrun (its caller hears that the writer failed).
    Gone,
}

/// What a request writes besides its change.
struct Writes {
    token: Option<SeenToken>,
    audit: Vec<AuditEntry>,
    /// A recommendation to count for the equity report: (tenant, what it adds).
    tally: Option<(String, RecommendationTally)>,
}

struct Job {
    writes: Writes,
    reply: Reply,
}

impl Reply {
    /// Whether the job's audit rows are written: a change that succeeded, a read whose token
    /// (if any) is fresh (`fresh`).
    fn keeps_audit(&self, fresh: bool) -> bool {
        match self {
            Reply::Ran { ok, .. } => *ok,
            Reply::Read(_) => fresh,
            Reply::Change(_) | Reply::Gone => false,
        }
    }

    /// Answers the job: `Ok(fresh)` once its batch is durable, or why it failed.
    fn answer(self, outcome: Result<bool, String>) {
        match self {
            Reply::Read(done) => {
                let _ = done.send(outcome);
            }
            Reply::Ran { deliver, .. } => deliver(outcome.map(|_| ())),
            Reply::Change(_) | Reply::Gone => {}
        }
    }
}

/// Hands writes to the group-commit task.
#[derive(Clone, Debug)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    stats: std::sync::Arc<WriteStats>,
}

/// What the writer has done since it started (also exported as metrics).
#[derive(Debug, Default)]
pub struct WriteStats {
    /// Transactions that carried at least one change.
    pub change_batches: AtomicU64,
    /// Changes run in those transactions, kept or not.
    pub changes: AtomicU64,
    /// Changes undone alone (their savepoint rolled back) while their batch went on.
    pub changes_undone: AtomicU64,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Writer {
    /// Starts the task on a thread of its own; it ends when every `Writer` is dropped.
    ///
    /// Its own thread, not a task among the requests': a batch is a series of round trips to
    /// the database (on SQLite, to its worker thread), and the batch in progress holds the
    /// write lock. On a request thread each round trip would wait its turn behind every
    /// request ready there; on this thread it goes on as soon as the answer is back.
    pub fn start(store: Store) -> std::io::Result<Writer> {
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        let stats = std::sync::Arc::<WriteStats>::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let counts = stats.clone();
        std::thread::Builder::new()
            .name("telemental-writer".into())
            .spawn(move || runtime.block_on(run(store, rx, counts)))?;
        Ok(Writer { jobs, stats })
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> std::sync::Arc<WriteStats> {
        self.stats.clone()
    }

    /// Records the token (when given) and, unless it is a replay, the audit entries, both
    /// committed before this returns. `Ok(false)`: the token was already used.
    pub async fn record(
        &self,
        token: Option<SeenToken>,
        audit: Vec<AuditEntry>,
    ) -> Result<bool, DbError> {
        if token.is_none() && audit.is_empty() {
            return Ok(true);
        }
        self.send(token, audit, None).await
    }

    /// Runs a change (SQLite) in the next batch's transaction, under a savepoint of its own,
    /// and writes `audit` with it if it succeeds; returns once the batch is on disk. `work`
    /// must not wait for anything that waits for the writer.
    pub async fn change<T, E, F>(&self, audit: Vec<AuditEntry>, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: for<'c> FnOnce(
                &'c mut SqliteConnection,
                &'c mut Savepoint,
            ) -> BoxFuture<'c, Result<T, E>>
            + Send
            + 'static,
    {
        let (done, answer) = oneshot::channel::<Result<T, E>>();
        let work: Work = erase(move |c, mut savepoint| {
            Box::pin(async move {
                let outcome = work(c, &mut savepoint).await;
                let ok = outcome.is_ok();
                let deliver: Deliver = Box::new(move |flushed| {
                    let _ = done.send(match (outcome, flushed) {
                        (Ok(_), Err(why)) => Err(DbError::Unavailable(why).into()),
                        (outcome, _) => outcome,
                    });
                });
                (ok, savepoint.began, deliver)
            })
        });
        let job = Job {
            writes: Writes {
                token: None,
                audit,
                tally: None,
            },
            reply: Reply::Change(work),
        };
        if self.jobs.send(job).await.is_err() {
            return Err(DbError::Unavailable("the writer has stopped".into()).into());
        }
        answer.await.unwrap_or_else(|_| {
            Err(DbError::Unavailable("the write batch failed before this change ran".into()).into())
        })
    }

    /// Records a recommendation's audit entries and counts it for the equity report.
    pub async fn record_recommendation(
        &self,
        audit: Vec<AuditEntry>,
        tenant: &str,
        tally: RecommendationTally,
    ) -> Result<(), DbError> {
        self.send(None, audit, Some((tenant.to_string(), tally)))
            .await
            .map(|_| ())
    }

    async fn send(
        &self,
        token: Option<SeenToken>,
        audit: Vec<AuditEntry>,
        tally: Option<(String, RecommendationTally)>,
    ) -> Result<bool, DbError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                writes: Writes {
                    token,
                    audit,
                    tally,
                },
                reply: Reply::Read(done),
            })
            .await
            .map_err(|_| DbError::Unavailable("the audit writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| DbError::Unavailable("the audit writer has stopped".into()))?
            .map_err(DbError::Unavailable)
    }
}

/// Pins down the higher-ranked signature of a change's closure.
fn erase<F>(f: F) -> Work
where
    F: for<'c> FnOnce(&'c mut SqliteConnection, Savepoint) -> BoxFuture<'c, (bool, bool, Deliver)>
        + Send
        + 'static,
{
    Box::new(f)
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>, stats: std::sync::Arc<WriteStats>) {
    // The writer's own connection to an SQLite file, opened at the first batch.
    let mut direct: Option<Direct> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // The same order in every instance, so concurrent batches on PostgreSQL lock token
        // rows in one order and cannot deadlock each other.
        batch.sort_by(|a, b| a.writes.token.cmp(&b.writes.token));
        let (writes, mut replies): (Vec<Writes>, Vec<Reply>) =
            batch.into_iter().map(|j| (j.writes, j.reply)).unzip();
        let changes = replies
            .iter()
            .filter(|r| matches!(r, Reply::Change(_)))
            .count() as u64;
        // Batches of changes keep sqlx's path: their statements are written against it, and
        // measured, the direct path did not make them faster (README, Benchmarks).
        let direct_batch = store.file.is_some() && changes == 0;
        let outcome = if direct_batch {
            write_direct(&store, &mut direct, &writes, &replies).await
        } else {
            write(&store, &writes, &mut replies).await
        };
        if changes > 0 {
            let undone = replies
                .iter()
                .filter(|r| matches!(r, Reply::Ran { ok: false, .. } | Reply::Gone))
                .count() as u64;
            stats.change_batches.fetch_add(1, Ordering::Relaxed);
            stats.changes.fetch_add(changes, Ordering::Relaxed);
            stats.changes_undone.fetch_add(undone, Ordering::Relaxed);
            metrics::counter!("telemental_change_batches_total").increment(1);
            metrics::counter!("telemental_changes_total").increment(changes);
            metrics::counter!("telemental_changes_undone_total").increment(undone);
        }
        match outcome {
            // Written on the writer's own connection and the log flushed (`write_direct`):
            // on disk already.
            Ok(fresh) if direct_batch => {
                for (reply, f) in replies.into_iter().zip(fresh) {
                    reply.answer(Ok(f));
                }
            }
            // Committed: the batch is answered once its commit is on disk. That wait runs
            // apart, so the next batch is written while this one's flush is under way (a
            // flush covers every commit made before it began, so each batch still waits
            // for a flush that started after its own commit).
            Ok(fresh) => {
                let store = store.clone();
                tokio::spawn(async move {
                    let flushed = store.durable().await.map_err(|e| e.to_string());
                    for (reply, f) in replies.into_iter().zip(fresh) {
                        reply.answer(flushed.clone().map(|()| f));
                    }
                });
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(error = %msg, calls = replies.len(), "batch write failed");
                for reply in replies {
                    reply.answer(Err(msg.clone()));
                }
            }
        }
    }
    if let Some(d) = direct {
        d.close();
    }
}

/// Rows per multi-row INSERT (well under both engines' limits on bound parameters). These
/// statements are not kept prepared (`persistent(false)`): one text per row count, cached on
/// every pooled connection, held tens of MiB for a saving of a few microseconds a batch.
const ROWS_PER_INSERT: usize = 100;

/// The connection changes run on: SQLite's (PostgreSQL does not batch changes).
trait ChangeConnection {
    fn for_changes(&mut self) -> Option<&mut SqliteConnection>;
}

impl ChangeConnection for SqliteConnection {
    fn for_changes(&mut self) -> Option<&mut SqliteConnection> {
        Some(self)
    }
}

impl ChangeConnection for sqlx::PgConnection {
    fn for_changes(&mut self) -> Option<&mut SqliteConnection> {
        None
    }
}

/// The savepoint a change runs under, started by the change's first statement: the statements
/// that end the previous change's savepoint and start this one travel in front of it, so a
/// create is one round trip to SQLite's worker thread. Outside the writer (a change in a
/// transaction of its own) there is none and statements go as they are.
#[derive(Debug, Default)]
pub struct Savepoint {
    prefix: Option<&'static str>,
    began: bool,
}

impl Savepoint {
    /// No savepoint: a change in a transaction of its own.
    pub fn none() -> Savepoint {
        Savepoint::default()
    }

    /// `sql`, for the change's next statement: the first one carries the savepoint's start.
    /// Every statement of a change goes through here.
    pub fn sql<'a>(&mut self, sql: &'a str) -> std::borrow::Cow<'a, str> {
        match self.prefix.take() {
            Some(p) => {
                self.began = true;
                format!("{p}{sql}").into()
            }
            None => sql.into(),
        }
    }
}

/// The two savepoint names, used in turn, and what starts each one after the other (or
/// first).
fn start_of(open: Option<char>) -> (char, &'static str) {
    match open {
        None => ('a', "SAVEPOINT a; "),
        Some('a') => ('b', "RELEASE a; SAVEPOINT b; "),
        Some(_) => ('a', "RELEASE b; SAVEPOINT a; "),
    }
}

/// Runs the batch's changes in order, each under a savepoint of its own: one that fails is
/// undone alone. Each job's reply becomes `Ran` (or `Gone` on PostgreSQL, where none are
/// sent). The last savepoint is ended by the batch's commit.
///
/// Why this is safe although the change starts its own savepoint: two names are used in turn,
/// so a change that failed is undone with `ROLLBACK TO` its own name, which only exists if
/// its savepoint began, and can never reach back into the previous change. A change that
/// failed before its savepoint began, or whose savepoint cannot be rolled back to, fails the
/// whole batch (every request in it is answered 503, nothing of it is kept). A change that
/// succeeded without a statement of its own has its savepoint started here.
async fn run_changes(
    conn: &mut impl ChangeConnection,
    replies: &mut [Reply],
) -> Result<(), DbError> {
    // The savepoint open now (kept, or rolled back to), if any.
    let mut open: Option<char> = None;
    for reply in replies.iter_mut() {
        if !matches!(reply, Reply::Change(_)) {
            continue;
        }
        let Reply::Change(work) = std::mem::replace(reply, Reply::Gone) else {
            continue;
        };
        let Some(c) = conn.for_changes() else {
            continue;
        };
        let (name, start) = start_of(open);
        let savepoint = Savepoint {
            prefix: Some(start),
            began: false,
        };
        // A change that panics fails the batch (whether its savepoint began is not known); its
        // caller and the others hear that the batch failed, and the writer goes on.
        let ran = AssertUnwindSafe(work(&mut *c, savepoint))
            .catch_unwind()
            .await;
        let (ok, began) = match ran {
            Ok((ok, began, deliver)) => {
                *reply = Reply::Ran { ok, deliver };
                (ok, began)
            }
            Err(_) => {
                tracing::error!("a change panicked in the writer");
                (false, false)
            }
        };
        match (ok, began) {
            (true, true) => {}
            (true, false) => {
                sqlx::query(start.trim_end_matches("; "))
                    .execute(&mut *c)
                    .await?;
            }
            (false, true) => {
                // Undoes the change; its savepoint stays open, empty.
                sqlx::query(&format!("ROLLBACK TO {name}"))
                    .execute(&mut *c)
                    .await?;
            }
            (false, false) => {
                return Err(DbError::Unavailable(
                    "a change failed before its savepoint began".into(),
                ))
            }
        }
        open = Some(name);
    }
    Ok(())
}

/// One transaction for the batch (PostgreSQL, and an SQLite database in memory): the changes
/// first, then one statement per table and chunk rather than per row for the rest (each
/// statement is a round trip), committed but not yet known to be durable; per job, whether its
/// token was fresh. A token twice in one batch is fresh only the first time.
async fn write(
    store: &Store,
    batch: &[Writes],
    replies: &mut [Reply],
) -> Result<Vec<bool>, DbError> {
    let Rows {
        first,
        tokens,
        tallies,
        shard,
        now,
    } = Rows::of(batch);
    let fresh: Vec<bool> = on_db!(&store.db, p => {
        let _turn = store.write_turn().await;
        let mut tx = p.begin().await?;
        run_changes(&mut *tx, replies).await?;
        let mut fresh_keys = HashSet::new();
        for chunk in tokens.chunks(ROWS_PER_INSERT) {
            let sql = store.numbered(seen_tokens_sql(chunk.len()));
            let mut q = sqlx::query_as::<_, (String, String)>(&sql).persistent(false);
            for t in chunk {
                q = q.bind(&t.issuer).bind(&t.jti).bind(t.keep_until);
            }
            fresh_keys.extend(q.bind(now).fetch_all(&mut *tx).await?);
        }
        let fresh = freshness(batch, &first, &fresh_keys);
        // Each tenant's entries are linked into its hash chain here and inserted sealed: one
        // write per row, where rows inserted unsealed are written again by the sealer.
        for (tenant, entries) in kept_audit(batch, &fresh, replies) {
            sqlx::query(audit::ENSURE_HEAD).bind(tenant).execute(&mut *tx).await?;
            let head: (i64, String) = sqlx::query_as(store.chain_head_sql())
                .bind(tenant).fetch_one(&mut *tx).await?;
            // Each sealed insert moves the head with it (migration 0060).
            let rows = audit::link(head, &entries);
            for chunk in rows.chunks(ROWS_PER_INSERT) {
                let sql = store.numbered(audit_sql(chunk.len()));
                let mut q = sqlx::query(&sql).persistent(false);
                for r in chunk {
                    q = audit::bind_audit_row!(q, r.id, r.at, r.entry)
                        .bind(r.seq)
                        .bind(&r.prev_hash)
                        .bind(&r.hash);
                }
                q.execute(&mut *tx).await?;
            }
        }
        for chunk in tallies.chunks(ROWS_PER_INSERT / 2) {
            let sql = store.numbered(tally_sql(chunk.len()));
            let mut q = sqlx::query(&sql).persistent(false);
            for ((tenant, day, modality, level, first), n) in chunk {
                q = q
                    .bind(tenant)
                    .bind(day)
                    .bind(*modality)
                    .bind(*level)
                    .bind(*first)
                    .bind(shard)
                    .bind(*n);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        fresh
    });
    Ok(fresh)
}

/// What a batch writes besides its changes, worked out before its transaction.
struct Rows<'b> {
    /// Per job: whether its token (if any) is the first use of that token in the batch.
    first: Vec<bool>,
    /// The tokens to record (each once).
    tokens: Vec<&'b SeenToken>,
    /// The batch's recommendations, summed per counter row.
    tallies: Vec<(Tally<'b>, i64)>,
    /// A random shard per batch, so that instances on one PostgreSQL rarely update the same
    /// counter row at once.
    shard: i32,
    now: Ts,
}

/// A recommendation counter row: tenant, day, modality, exclusion level, first preference.
type Tally<'b> = (&'b str, chrono::NaiveDate, &'b str, &'b str, &'b str);

impl<'b> Rows<'b> {
    fn of(batch: &'b [Writes]) -> Rows<'b> {
        let mut seen = HashSet::new();
        let first: Vec<bool> = batch
            .iter()
            .map(|j| {
                j.token
                    .as_ref()
                    .is_none_or(|t| seen.insert((t.issuer.as_str(), t.jti.as_str())))
            })
            .collect();
        let tokens = batch
            .iter()
            .zip(&first)
            .filter_map(|(j, f)| j.token.as_ref().filter(|_| *f))
            .collect();
        let mut sums: BTreeMap<Tally<'b>, i64> = BTreeMap::new();
        for (tenant, t) in batch.iter().filter_map(|j| j.tally.as_ref()) {
            *sums
                .entry((
                    tenant.as_str(),
                    t.day,
                    t.modality,
                    t.exclusion_level,
                    t.first_preference,
                ))
                .or_default() += 1;
        }
        Rows {
            first,
            tokens,
            tallies: sums.into_iter().collect(),
            shard: rand::random_range(0..16),
            now: Ts::now(),
        }
    }
}

/// Per job, whether its token (if any) is fresh: the first use in its batch, and recorded now.
fn freshness(
    batch: &[Writes],
    first: &[bool],
    fresh_keys: &HashSet<(String, String)>,
) -> Vec<bool> {
    // Looked up by borrowed pairs: no copy of each token's issuer and jti per job.
    let recorded: HashSet<(&str, &str)> = fresh_keys
        .iter()
        .map(|(issuer, jti)| (issuer.as_str(), jti.as_str()))
        .collect();
    batch
        .iter()
        .zip(first)
        .map(|(j, f)| {
            *f && j
                .token
                .as_ref()
                .is_none_or(|t| recorded.contains(&(t.issuer.as_str(), t.jti.as_str())))
        })
        .collect()
}

/// The audit entries the batch keeps (of changes that succeeded, of reads whose token was
/// fresh), per tenant, in order.
fn kept_audit<'b>(
    batch: &'b [Writes],
    fresh: &[bool],
    replies: &[Reply],
) -> BTreeMap<&'b str, Vec<&'b AuditEntry>> {
    let mut by_tenant: BTreeMap<&str, Vec<&AuditEntry>> = BTreeMap::new();
    for ((j, f), reply) in batch.iter().zip(fresh).zip(replies) {
        if reply.keeps_audit(*f) {
            for e in &j.audit {
                by_tenant.entry(e.tenant.as_str()).or_default().push(e);
            }
        }
    }
    by_tenant
}

/// The writer's own connection to the SQLite file, opened and stepped on the writer's thread.
///
/// Through sqlx every statement is a hand-off to the connection's worker thread and back; a
/// batch was half a dozen of them, and under load each hand-off waits for a core (taking an
/// sqlx connection's handle for the batch, `lock_handle`, is still three wake-ups between the
/// two threads). Here a batch runs its statements on this thread, prepared once and kept.
/// Batches with changes go through sqlx on a pooled connection (their statements are written
/// against it). A connection of its own also keeps its page cache warm between batches
/// without changes.
struct Direct {
    raw: rusqlite::Connection,
    sql: RowSql,
    /// The log file, flushed after each commit, and the database file (flushed instead when
    /// there is no log), as the shared flusher does (`sync.rs`).
    log: std::path::PathBuf,
    database: std::path::PathBuf,
}

/// The texts of the one-row statements the writer keeps prepared (also their keys in the
/// statement cache), made once.
struct RowSql {
    seen_token: String,
    chain_head: &'static str,
    audit_row: String,
    tally: String,
}

/// The settings a pooled connection has (`Store::open`) that the writer's connection takes
/// over, read from the pool so the two cannot drift apart.
const SHARED_PRAGMAS: [&str; 6] = [
    "synchronous",
    "foreign_keys",
    "busy_timeout",
    "cache_size",
    "temp_store",
    "wal_autocheckpoint",
];

impl Direct {
    async fn open(store: &Store) -> Result<Direct, DbError> {
        let (super::Db::Sqlite(pool), Some(file)) = (&store.db, &store.file) else {
            return Err(DbError::Unavailable(
                "the direct writer needs an SQLite database file".into(),
            ));
        };
        let mut settings = Vec::with_capacity(SHARED_PRAGMAS.len());
        {
            let mut pooled = pool.acquire().await?;
            for name in SHARED_PRAGMAS {
                let value: i64 = sqlx::query_scalar(&format!("PRAGMA {name}"))
                    .fetch_one(&mut *pooled)
                    .await?;
                settings.push((name, value));
            }
        }
        let raw = rusqlite::Connection::open(file).map_err(direct_err)?;
        for (name, value) in settings {
            raw.pragma_update(None, name, value).map_err(direct_err)?;
        }
        let sql = RowSql {
            seen_token: positional(&seen_tokens_sql(1)),
            chain_head: store.chain_head_sql(),
            audit_row: positional(&audit_sql(1)),
            tally: positional(&tally_sql(1)),
        };
        Ok(Direct {
            raw,
            sql,
            log: super::sync::log_of(file),
            database: file.clone(),
        })
    }

    /// Finalizes the kept statements and closes the connection.
    fn close(self) {
        self.raw.flush_prepared_statement_cache();
        if let Err((_, e)) = self.raw.close() {
            tracing::warn!(error = %e, "could not close the writer's SQLite connection");
        }
    }
}

fn direct_err(e: rusqlite::Error) -> DbError {
    DbError::Unavailable(format!("the batch write failed: {e}"))
}

/// [`write`] for a batch without changes, on the writer's own SQLite connection ([`Direct`]):
/// the whole transaction on this thread, then the log flushed.
async fn write_direct(
    store: &Store,
    direct: &mut Option<Direct>,
    batch: &[Writes],
    replies: &[Reply],
) -> Result<Vec<bool>, DbError> {
    let d = match direct {
        Some(d) => d,
        None => direct.insert(Direct::open(store).await?),
    };
    let Direct {
        raw,
        sql,
        log,
        database,
    } = d;
    let rows = Rows::of(batch);
    let written = {
        let _turn = store.write_turn().await;
        let written = raw
            .execute_batch("BEGIN IMMEDIATE")
            .and_then(|()| write_rows(raw, sql, &rows, batch, replies))
            .and_then(|keys| raw.execute_batch("COMMIT").map(|()| keys));
        if written.is_err() && !raw.is_autocommit() {
            // Nothing of a failed batch is kept.
            let _ = raw.execute_batch("ROLLBACK");
        }
        written
    };
    let fresh = written.map_err(direct_err)?;
    // On disk before it is answered: the log flushed here, on the writer's thread, rather
    // than by the shared flusher (a wake-up of its task, of a blocking thread, and back). The
    // flush covers every frame in the log, whichever connection wrote it. It runs after the
    // writers' turn is given back, so a change can commit meanwhile.
    super::sync::flush(log, database).map_err(DbError::Unavailable)?;
    Ok(fresh)
}

/// The batch's token ids, audit rows and recommendation counts, one kept statement each, in
/// the open transaction; returns, per job, whether its token was fresh. The rows are bound as
/// sqlx binds them (UUIDs as 16-byte blobs, times as `Ts` text, days as `YYYY-MM-DD`).
fn write_rows(
    c: &rusqlite::Connection,
    sql: &RowSql,
    rows: &Rows<'_>,
    batch: &[Writes],
    replies: &[Reply],
) -> rusqlite::Result<Vec<bool>> {
    use rusqlite::OptionalExtension;
    let now = rows.now.to_sqlite_text();
    let mut fresh_keys = HashSet::new();
    let mut seen = c.prepare_cached(&sql.seen_token)?;
    for t in &rows.tokens {
        let recorded = seen
            .query_row(
                rusqlite::params![t.issuer, t.jti, t.keep_until.to_sqlite_text(), now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        fresh_keys.extend(recorded);
    }
    let fresh = freshness(batch, &rows.first, &fresh_keys);
    for (tenant, entries) in kept_audit(batch, &fresh, replies) {
        c.prepare_cached(audit::ENSURE_HEAD)?.execute([tenant])?;
        let head: (i64, String) = c
            .prepare_cached(sql.chain_head)?
            .query_row([tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut insert = c.prepare_cached(&sql.audit_row)?;
        // Each sealed insert moves the head with it (migration 0060).
        for r in audit::link(head, &entries) {
            let e = r.entry;
            insert.execute(rusqlite::params![
                r.id.as_bytes().as_slice(),
                e.tenant,
                r.at.to_sqlite_text(),
                e.actor,
                e.action,
                e.resource_type,
                e.resource_id.as_ref().map(|u| u.as_bytes().as_slice()),
                e.subject,
                e.request_id,
                e.outcome,
                r.seq,
                r.prev_hash,
                r.hash,
            ])?;
        }
    }
    let mut tally = c.prepare_cached(&sql.tally)?;
    for ((tenant, day, modality, level, first), n) in &rows.tallies {
        tally.execute(rusqlite::params![
            tenant,
            day.format("%F").to_string(),
            modality,
            level,
            first,
            rows.shard,
            n,
        ])?;
    }
    Ok(fresh)
}

/// `$1, $2, …` groups of `width` for `rows` rows, starting at `$1`.
pub(super) fn placeholders(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let cols: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Records token ids; returns those recorded now (new, or taking over an expired row). The
/// last parameter is the current time.
fn seen_tokens_sql(rows: usize) -> String {
    format!(
        "INSERT INTO cds_seen_tokens (issuer, jti, expires_at) VALUES {} \
         ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE cds_seen_tokens.expires_at < ${} RETURNING issuer, jti",
        placeholders(rows, 3),
        rows * 3 + 1
    )
}

/// The columns of `store::audit::INSERT_AUDIT` and the chain fields, for many rows at once.
fn audit_sql(rows: usize) -> String {
    format!(
        "INSERT INTO audit_events (id, tenant, at, actor, action, resource_type, resource_id, \
         subject, request_id, outcome, seq, prev_hash, hash) VALUES {}",
        placeholders(rows, 13)
    )
}

/// Adds counts to the equity report's recommendation counters.
fn tally_sql(rows: usize) -> String {
    format!(
        "INSERT INTO recommendation_counts \
         (tenant, day, modality, exclusion_level, first_preference, shard, n) VALUES {} \
         ON CONFLICT (tenant, day, modality, exclusion_level, first_preference, shard) \
         DO UPDATE SET n = recommendation_counts.n + excluded.n",
        placeholders(rows, 7)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_savepoint_begins_with_the_first_statement_only() {
        let mut sp = Savepoint {
            prefix: Some("SAVEPOINT a; "),
            began: false,
        };
        assert!(!sp.began);
        assert_eq!(sp.sql("INSERT 1"), "SAVEPOINT a; INSERT 1");
        assert!(sp.began);
        assert_eq!(sp.sql("INSERT 2"), "INSERT 2");
        let mut none = Savepoint::none();
        assert_eq!(none.sql("INSERT 1"), "INSERT 1");
        assert!(!none.began);
    }

    #[test]
    fn savepoint_names_alternate_and_each_start_ends_the_other() {
        assert_eq!(start_of(None), ('a', "SAVEPOINT a; "));
        assert_eq!(start_of(Some('a')), ('b', "RELEASE a; SAVEPOINT b; "));
        assert_eq!(start_of(Some('b')), ('a', "RELEASE b; SAVEPOINT a; "));
    }

    #[tokio::test]
    async fn the_writers_connection_has_the_pools_settings_and_its_batches_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.db");
        let url = format!("sqlite://{}", file.display());
        // The service's settings: no checkpoint by commits (0, not SQLite's 1000), a smaller
        // page cache than SQLite's, statement journals in memory, NORMAL; a busy timeout and
        // foreign keys on.
        let store = Store::connect_for_service(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let mut direct = None;
        let super::super::Db::Sqlite(pool) = &store.db else {
            unreachable!("an SQLite store")
        };
        let token = SeenToken {
            issuer: "https://ehr.example".into(),
            jti: "j-1".into(),
            keep_until: Ts::from(Ts::now().0 + chrono::Duration::minutes(5)),
        };
        let writes = |token: &SeenToken| Writes {
            token: Some(token.clone()),
            audit: vec![],
            tally: None,
        };
        let read = || Reply::Read(oneshot::channel().0);
        let fresh = write_direct(&store, &mut direct, &[writes(&token)], &[read()])
            .await
            .unwrap();
        assert_eq!(fresh, vec![true], "a new token id is fresh");
        let again = write_direct(&store, &mut direct, &[writes(&token)], &[read()])
            .await
            .unwrap();
        assert_eq!(again, vec![false], "the same token id again is a replay");
        let d = direct.unwrap();
        // A connection opened as `Direct::open` opens one, without the copy: to show the
        // settings were copied rather than found equal.
        let plain = rusqlite::Connection::open(&file).unwrap();
        for name in SHARED_PRAGMAS {
            let pooled: i64 = sqlx::query_scalar(&format!("PRAGMA {name}"))
                .fetch_one(pool)
                .await
                .unwrap();
            let own: i64 = d.raw.pragma_query_value(None, name, |r| r.get(0)).unwrap();
            let default: i64 = plain.pragma_query_value(None, name, |r| r.get(0)).unwrap();
            assert_eq!(own, pooled, "PRAGMA {name}");
            // Without the copy, a connection rusqlite opens already has foreign keys on (the
            // bundled SQLite's build) and a 5 s busy timeout (rusqlite's), as the pool has; the
            // other four differ, so they are seen to be copied.
            if !matches!(name, "foreign_keys" | "busy_timeout") {
                assert_ne!(own, default, "PRAGMA {name} is what rusqlite opens with");
            }
        }
        drop(plain);
        let journal: String = d
            .raw
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(journal, "wal");
        assert_eq!(d.log, dir.path().join("w.db-wal"));
        assert!(
            d.log.exists(),
            "the log flushed after each batch is SQLite's"
        );
        // What the writer committed, another connection reads.
        let kept: i64 =
            sqlx::query_scalar("SELECT count(*) FROM cds_seen_tokens WHERE jti = 'j-1'")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(kept, 1);
        d.close();
    }

    #[test]
    fn multi_row_statements_number_their_parameters_in_order() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert!(seen_tokens_sql(2).contains("($4, $5, $6) ON CONFLICT"));
        assert!(seen_tokens_sql(2).contains("expires_at < $7 RETURNING"));
        assert!(audit_sql(1).ends_with("($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"));
    }
}
