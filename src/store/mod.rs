//! Storage on two engines behind one interface.
//!
//! The same SQL text runs on SQLite and PostgreSQL (both accept `$1` placeholders, `RETURNING`
//! and `ON CONFLICT`); `on_db!` expands each query once per engine so both are type-checked.
//! Engine-specific column types are handled by the migrations and by [`Ts`].

mod audit;
pub mod cache;
pub mod forms;
pub mod keys;
pub mod outbox;
mod records;
pub mod referrals;
mod reports;
mod session_checks;
pub mod sync;
mod ts;
pub mod writer;

pub use audit::{AuditEntry, AuditFilter, AuditRow, ChainReport, ChainedRow};
pub use records::{
    Current, ListQuery, Record, RecordKind, RecordMeta, RecordTable, UpdateError, PLANS,
    SAFETY_PROTOCOLS,
};
pub use session_checks::{CheckRecord, NewCheck};
pub use ts::Ts;

use crate::crypto::{CryptoError, Keyring, Place};
use crate::error::StartupError;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::str::FromStr;
use std::time::Duration;

/// Runs `$body` with `$pool` bound to the concrete pool of the configured engine.
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// Runs a record change: `$body`, with `$c` bound to an open transaction's connection and
/// `$sp` to the change's [`writer::Savepoint`] (every statement's text goes through
/// `$sp.sql(…)`), evaluates to `Result<T, E>` (`E: From<DbError> + From<sqlx::Error>`), may
/// `return Err(…)` early, and owns what it uses (it may run on the writer's thread). On SQLite
/// with the writer started, it joins the writer's next batch under a savepoint of its own,
/// with `$audit` linked into the chain as it is inserted; otherwise it is a transaction of its
/// own with `$audit` inserted unsealed (the sealer links it). Either way the result is
/// returned once the change is durable.
macro_rules! change {
    ($store:expr, $audit:expr, $c:ident, $sp:ident => $body:expr) => {{
        let store: &$crate::store::Store = $store;
        let audit: &$crate::store::AuditEntry = $audit;
        if let Some(w) = store.batched() {
            w.change(vec![audit.clone()], move |$c, $sp| {
                Box::pin(async move { $body })
            })
            .await
        } else {
            async {
                let done = $crate::store::on_db!(&store.db, p => {
                    let _turn = store.write_turn().await;
                    let mut tx = p.begin().await?;
                    let done = {
                        let $c = &mut *tx;
                        let $sp = &mut $crate::store::writer::Savepoint::none();
                        $body?
                    };
                    $crate::store::audit::insert_audit!(&mut *tx, audit)?;
                    tx.commit().await?;
                    done
                });
                store.durable().await?;
                Ok(done)
            }
            .await
        }
    }};
}
pub(crate) use change;

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Storage failures, mapped once from `sqlx::Error`.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    #[error("conflict with an existing row")]
    Conflict,
    /// The database could not be reached or a connection could not be used: worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(sqlx::Error),
    /// A stored row that this build cannot read (see `forms`).
    #[error(transparent)]
    Unreadable(#[from] forms::FormError),
    /// A sealed value that does not decrypt, outside a stored form (an outbox payload, a
    /// replayed response, a webhook secret), or that cannot be sealed (no key).
    #[error("{0}")]
    Crypto(#[from] CryptoError),
}

impl DbError {
    /// The decryption failure behind this error, if that is what it is.
    pub fn crypto(&self) -> Option<&CryptoError> {
        match self {
            DbError::Crypto(e) => Some(e),
            DbError::Unreadable(f) => f.crypto(),
            _ => None,
        }
    }
}

/// A record's row as associated data: its id and version (`<uuid>@<version>`), so that a
/// version's ciphertext does not read as another version's.
pub(crate) fn record_row(id: uuid::Uuid, version: i64) -> String {
    format!("{id}@{version}")
}

/// Where a failure to get or use a connection happened. Every one of these is the database's
/// (or the network's) trouble, never the client's: the API answers 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionFault {
    /// Waiting for a pooled connection (pool exhausted or closed).
    Acquiring,
    /// Opening a new connection: refused, TLS, authentication, a database that does not accept
    /// connections (PostgreSQL answers those with a FATAL error), a SQLite file that cannot be
    /// opened.
    Connecting,
    /// Reading or writing an open connection.
    Io,
    /// The server ended the session under us (a FATAL error such as `pg_terminate_backend`, a
    /// protocol break, SQLite's worker thread gone).
    Closed,
    /// The database is there but cannot do the work now: busy or locked, out of memory or disk,
    /// a serialization failure or deadlock, a read-only standby, a cancelled statement.
    Busy,
}

impl ConnectionFault {
    /// Classifies a `sqlx` error; `None` when it is not a connection fault (a bad statement,
    /// a constraint, a decoding error: those are bugs or conflicts, not outages).
    pub fn of(e: &sqlx::Error) -> Option<ConnectionFault> {
        use sqlx::Error as E;
        match e {
            E::PoolTimedOut | E::PoolClosed => Some(ConnectionFault::Acquiring),
            // With a lazily connecting pool, connection settings and TLS are only tried when
            // a connection is opened.
            E::Configuration(_) | E::Tls(_) => Some(ConnectionFault::Connecting),
            E::Io(_) => Some(ConnectionFault::Io),
            E::Protocol(_) | E::WorkerCrashed => Some(ConnectionFault::Closed),
            E::Database(d) => {
                if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                    pg_fault(pg)
                } else if let Some(lite) = d.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                    sqlite_fault(lite)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ConnectionFault::Acquiring => "acquiring a connection",
            ConnectionFault::Connecting => "connecting",
            ConnectionFault::Io => "I/O on a connection",
            ConnectionFault::Closed => "the connection was closed",
            ConnectionFault::Busy => "the database is busy",
        }
    }
}

/// PostgreSQL reports a session it ends (at start-up or later) with severity FATAL or PANIC,
/// whatever the SQLSTATE: a database refusing connections (55000), a terminated backend
/// (57P01), bad credentials (28P01), a missing database (3D000). Statement errors are ERROR;
/// of those, only resource and concurrency classes are transient.
fn pg_fault(e: &sqlx::postgres::PgDatabaseError) -> Option<ConnectionFault> {
    use sqlx::postgres::PgSeverity;
    if matches!(e.severity(), PgSeverity::Fatal | PgSeverity::Panic) {
        return Some(ConnectionFault::Closed);
    }
    let code = e.code();
    let class = code.get(..2).unwrap_or("");
    match class {
        // connection exception
        "08" => Some(ConnectionFault::Closed),
        // insufficient resources (disk full, out of memory, too many connections), operator
        // intervention (shutdown, cancelled statement), system error (I/O)
        "53" | "57" | "58" => Some(ConnectionFault::Busy),
        // serialization failure, deadlock
        "40" => Some(ConnectionFault::Busy),
        _ => match code {
            // read-only transaction: a standby after a failover
            "25006" => Some(ConnectionFault::Busy),
            // lock not available
            "55P03" => Some(ConnectionFault::Busy),
            // data corrupted, index corrupted
            "XX001" | "XX002" => Some(ConnectionFault::Busy),
            _ => None,
        },
    }
}

/// SQLite reports the extended result code; its low byte is the primary code.
fn sqlite_fault(e: &sqlx::sqlite::SqliteError) -> Option<ConnectionFault> {
    use sqlx::error::DatabaseError;
    let code: i32 = e.code()?.parse().ok()?;
    match code & 0xff {
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY, SQLITE_INTERRUPT,
        // SQLITE_FULL
        5 | 6 | 7 | 8 | 9 | 13 => Some(ConnectionFault::Busy),
        // SQLITE_IOERR
        10 => Some(ConnectionFault::Io),
        // SQLITE_CANTOPEN, SQLITE_NOTADB (the file is gone or replaced), SQLITE_CORRUPT (a
        // damaged file: the operator's to repair, not the client's fault)
        11 | 14 | 26 => Some(ConnectionFault::Connecting),
        // SQLITE_PROTOCOL (a WAL locking protocol error)
        15 => Some(ConnectionFault::Closed),
        _ => None,
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(fault) = ConnectionFault::of(&e) {
            return DbError::Unavailable(format!("{}: {e}", fault.describe()));
        }
        match &e {
            sqlx::Error::RowNotFound => DbError::NotFound,
            sqlx::Error::Database(d) if d.is_unique_violation() => DbError::Conflict,
            _ => DbError::Other(e),
        }
    }
}

pub type DbResult<T> = Result<T, DbError>;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone, Debug)]
pub struct Store {
    pub db: Db,
    /// SQLite's group commit (`None` for PostgreSQL, which groups commits itself, and for an
    /// in-memory SQLite database).
    sync: Option<std::sync::Arc<sync::Syncer>>,
    /// The current plans and protocols in memory: SQLite, when this process owns the file.
    cache: Option<std::sync::Arc<cache::RecordCache>>,
    /// SQLite has one writer at a time. Write transactions take turns here, first come first
    /// served, instead of meeting SQLite's lock and its busy handler, which sleeps up to
    /// 100 ms a try and lets a steady writer starve the others (`None` for PostgreSQL).
    write_gate: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    /// Holds the SQLite file's lock (and its cache) for as long as a store uses it.
    _owner: Option<std::sync::Arc<SqliteOwner>>,
    /// The SQLite database file.
    file: Option<std::path::PathBuf>,
    /// The keys personal fields are sealed with (`crate::crypto`); none until
    /// [`Store::with_keys`], and then nothing personal can be written or read back.
    keys: std::sync::Arc<Keyring>,
    /// The group-commit writer ([`Store::with_writer`]): on SQLite, record changes join its
    /// batches. Its own task's store has none.
    writer: Option<writer::Writer>,
}

/// This process's hold on a SQLite database file: an exclusive lock on `<file>.lock`, so that
/// no other process writes the file behind the cache, and the cache itself. Stores on the
/// same file in one process (tests, the CLI) share it.
#[derive(Debug)]
pub struct SqliteOwner {
    _lock: std::fs::File,
    cache: std::sync::Arc<cache::RecordCache>,
}

/// The SQLite files this process holds, by path.
static SQLITE_OWNERS: std::sync::Mutex<Vec<(std::path::PathBuf, std::sync::Weak<SqliteOwner>)>> =
    std::sync::Mutex::new(Vec::new());

/// Takes (or shares) this process's hold on `file`. `Err` when another process holds it;
/// `Ok(None)` when no lock file can be made (read-only directory): then nothing is cached.
fn own_sqlite_file(file: &std::path::Path) -> Result<Option<std::sync::Arc<SqliteOwner>>, String> {
    let path = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let mut owners = SQLITE_OWNERS.lock().unwrap_or_else(|p| p.into_inner());
    owners.retain(|(_, w)| w.strong_count() > 0);
    if let Some(o) = owners
        .iter()
        .find(|(p, _)| *p == path)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(Some(o));
    }
    let mut lock_path = path.clone().into_os_string();
    lock_path.push(".lock");
    let lock = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "no lock file beside the SQLite database: records are not cached");
            return Ok(None);
        }
    };
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(format!(
                "another process is using the SQLite database {} (it holds {}); one process \
                 per SQLite file — use PostgreSQL for several instances",
                path.display(),
                std::path::Path::new(&lock_path).display()
            ))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::warn!(error = %e, "cannot lock the SQLite database's lock file: records are not cached");
            return Ok(None);
        }
    }
    let owner = std::sync::Arc::new(SqliteOwner {
        _lock: lock,
        cache: Default::default(),
    });
    owners.push((path, std::sync::Arc::downgrade(&owner)));
    Ok(Some(owner))
}

/// `$1, $2, …` (once each, in order) as bare `?`s.
fn positional(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            out.push('?');
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Log size (pages) at which the service's checkpoint lets the log start again (see
/// `Store::checkpoint`), as SQLite's own checkpoints do: about 4 MiB of log.
const RESTART_LOG_AT: i64 = 1000;

/// A checkpoint holds the writers off once a pass beside them found at most this many frames
/// new since the pass before: that pass was short, so few frames came in during it, and the
/// held pass has little to copy and flush (about 2 ms here).
const HELD_PASS_AT_MOST: i64 = 64;

/// Passes beside the writers a checkpoint makes at most before holding them off, however
/// fast commits come (each pass copies what came during the one before).
const MAX_PASSES: u32 = 8;

/// Whether a checkpoint copies the log once more beside the writers, after `passes` passes,
/// the last of which found `committed_meanwhile` frames new since the pass before it.
fn copy_again(committed_meanwhile: i64, passes: u32) -> bool {
    committed_meanwhile > HELD_PASS_AT_MOST && passes < MAX_PASSES
}

/// Frames in a log of `log` frames that are past the `copied` ones a checkpoint pass reported
/// before. A commit may have started the log again since that pass (every frame had been
/// copied and nobody read an older snapshot): then every frame of it is new.
fn frames_after(log: i64, copied: i64) -> i64 {
    if log >= copied {
        log - copied
    } else {
        log
    }
}

/// What [`Store::checkpoint`] did (SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    /// The log's size in pages when the last pass began.
    pub log: i64,
    /// Passes over the log, the held one included.
    pub passes: u32,
    /// Frames copied with writers held off, when the log was let start again.
    pub held: Option<i64>,
}

impl Store {
    /// Opens a pool for the URL's engine. PostgreSQL pools connect lazily, so a database that is
    /// down at start-up (or later) gives 503s until it returns, never a crash.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StartupError> {
        Self::open(url, max_connections, true).await
    }

    /// As [`Store::connect`], for the service: on SQLite, commits never checkpoint the log
    /// themselves; the service runs [`Store::checkpoint`] in the background instead.
    pub async fn connect_for_service(
        url: &str,
        max_connections: u32,
    ) -> Result<Store, StartupError> {
        Self::open(url, max_connections, false).await
    }

    async fn open(
        url: &str,
        max_connections: u32,
        auto_checkpoint: bool,
    ) -> Result<Store, StartupError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| {
                    StartupError::new("TELEMENTAL_DATABASE_URL is not a valid SQLite URL", e)
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // NORMAL: a commit is not flushed by itself; a request that must be durable
                // before its answer (every write, every audit row) waits for `durable()`,
                // which flushes once for all commits made meanwhile (`sync.rs`). SQLite still
                // flushes around checkpoints, as it must for NORMAL to be safe.
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                // 1 MiB of page cache per connection rather than SQLite's 2 MiB: current plans
                // and protocols are served from the record cache, and the operating system
                // caches the file's pages once for all connections.
                .pragma("cache_size", "-1024")
                // A multi-row statement inside a transaction keeps the pages it changes in a
                // statement journal, to undo itself alone; in memory, not in a temporary file.
                .pragma("temp_store", "memory")
                // By default the commit that takes the log past 1 000 pages checkpoints it
                // (copies its pages to the database and flushes both) before it returns, and
                // every request queued behind that commit waits. The service checkpoints from
                // a background task instead (`checkpoint`), beside the writers.
                .pragma(
                    "wal_autocheckpoint",
                    if auto_checkpoint { "1000" } else { "0" },
                )
                .busy_timeout(Duration::from_secs(5));
            let file = opts.get_filename().to_path_buf();
            let on_disk = !file.as_os_str().is_empty() && file != std::path::Path::new(":memory:");
            let sync = on_disk.then(|| sync::Syncer::start(file.clone()));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await
                .map_err(|e| StartupError::new("cannot open the SQLite database", e))?;
            Ok(Store {
                db: Db::Sqlite(pool),
                sync,
                cache: None,
                write_gate: Some(Default::default()),
                _owner: None,
                file: on_disk.then_some(file),
                keys: Default::default(),
                writer: None,
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url).map_err(|e| {
                StartupError::new("TELEMENTAL_DATABASE_URL is not a valid PostgreSQL URL", e)
            })?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(3))
                .connect_lazy_with(opts);
            Ok(Store {
                db: Db::Postgres(pool),
                sync: None,
                cache: None,
                write_gate: None,
                _owner: None,
                file: None,
                keys: Default::default(),
                writer: None,
            })
        } else {
            Err(StartupError::msg(
                "TELEMENTAL_DATABASE_URL must start with sqlite:// or postgres://",
            ))
        }
    }

    /// The store of the running service: on a SQLite file, takes this process's hold on the
    /// file (refused while another service process holds it) and with it the in-memory cache
    /// of current plans and protocols. Tools (`migrate`, `audit …`) open the store without it:
    /// they do not write plans or protocols.
    pub fn owned(mut self) -> Result<Store, String> {
        if let Some(file) = &self.file {
            if let Some(owner) = own_sqlite_file(file)? {
                self.cache = Some(owner.cache.clone());
                self._owner = Some(owner);
            }
        }
        Ok(self)
    }

    /// Starts the group-commit writer (`writer`) for this store, on a thread of its own. It
    /// stops when the last clone of the returned store (and of its writer) is dropped.
    pub fn with_writer(mut self) -> std::io::Result<Store> {
        self.writer = None;
        self.writer = Some(writer::Writer::start(self.clone())?);
        Ok(self)
    }

    /// The group-commit writer, once started.
    pub fn writer(&self) -> Option<&writer::Writer> {
        self.writer.as_ref()
    }

    /// Where a record change goes: into the writer's batches (SQLite, writer started), or
    /// `None` for a transaction of its own.
    pub(crate) fn batched(&self) -> Option<&writer::Writer> {
        match self.db {
            Db::Sqlite(_) => self.writer.as_ref(),
            Db::Postgres(_) => None,
        }
    }

    /// The store with `keys` to seal and open personal fields.
    pub fn with_keys(mut self, keys: Keyring) -> Store {
        self.keys = std::sync::Arc::new(keys.fresh());
        self
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Where a column of one row is sealed.
    pub(crate) fn place<'a>(&'a self, tenant: &'a str, table: &'a str, row: &'a str) -> Place<'a> {
        Place {
            keys: &self.keys,
            tenant,
            table,
            row,
        }
    }

    /// Returns once every commit this process made before the call is on disk. Call it after
    /// a commit whose request is answered as done (a write, an audit row of a read).
    /// A generated statement's `$N` parameters as this engine reads them fastest. SQLite takes
    /// `$N` (and `?N`) as a *name*: preparing finds each one by a linear search of the names
    /// before it, and binding looks each name up again the same way, so a multi-row statement
    /// with a thousand parameters costs a million string comparisons. A bare `?` is just the
    /// next parameter. Only for generated statements that use `$1, $2, …` once each, in
    /// order, and have no other `$` in them.
    pub(crate) fn numbered(&self, sql: String) -> String {
        match self.db {
            Db::Sqlite(_) => positional(&sql),
            Db::Postgres(_) => sql,
        }
    }

    /// This process's turn to write (SQLite): hold it from `BEGIN` to `COMMIT`, and drop it
    /// before waiting for [`Store::durable`], so that others commit during the flush.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_gate {
            Some(g) => Some(g.lock().await),
            None => None,
        }
    }

    /// SQLite: checkpoints the write-ahead log; the log's size in pages before it starts
    /// again. PostgreSQL: nothing to do (`None`).
    ///
    /// The bulk of the log is copied beside the writers (`PASSIVE`). Once the log holds
    /// [`RESTART_LOG_AT`] pages, it is copied again beside the writers until a pass finds few
    /// frames committed since the one before ([`copy_again`]); then those last frames are
    /// copied with writers held off (their turn taken), so the whole log is in the database
    /// and the next commit starts the log again from its beginning: it stays a few MiB, as
    /// with SQLite's own checkpoints, without a commit stalling on a full copy and two flushes.
    ///
    /// Why more than one pass beside the writers: a pass ends with a flush of the database
    /// file, whose cost grows with the pages copied (about 10 ms for 300 pages on the
    /// development machine's disk). Under a steady load a pass over a few thousand frames
    /// takes 10-20 ms, and the few hundred frames committed meanwhile made the held pass as
    /// long: writers waited 15 ms a fifth of a second, and most of the slowest CDS calls were
    /// those waits (README, "The checkpoint's held pass"). Each further pass copies what the
    /// one before let in, a shorter pass, until little is left.
    pub async fn checkpoint(&self) -> DbResult<Option<Checkpointed>> {
        const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";
        let Db::Sqlite(p) = &self.db else {
            return Ok(None);
        };
        // (busy, frames in the log when the pass began, frames copied to the database so far)
        let (_busy, log, mut copied): (i64, i64, i64) =
            sqlx::query_as(PASSIVE).fetch_one(p).await?;
        if log < RESTART_LOG_AT {
            return Ok(Some(Checkpointed {
                log,
                passes: 1,
                held: None,
            }));
        }
        let mut passes = 1;
        let mut committed_meanwhile = log;
        while copy_again(committed_meanwhile, passes) {
            let (_busy, log, now_copied): (i64, i64, i64) =
                sqlx::query_as(PASSIVE).fetch_one(p).await?;
            committed_meanwhile = frames_after(log, copied);
            copied = now_copied;
            passes += 1;
        }
        let _turn = self.write_turn().await;
        let (_busy, log, now_copied): (i64, i64, i64) =
            sqlx::query_as(PASSIVE).fetch_one(p).await?;
        let held = frames_after(now_copied, copied);
        metrics::histogram!("telemental_sqlite_checkpoint_held_pages").record(held as f64);
        Ok(Some(Checkpointed {
            log,
            passes: passes + 1,
            held: Some(held),
        }))
    }

    pub async fn durable(&self) -> DbResult<()> {
        match &self.sync {
            Some(s) => s.durable().await.map_err(DbError::Unavailable),
            None => Ok(()),
        }
    }

    pub fn engine(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Applies the engine's embedded migrations (PostgreSQL takes an advisory lock, so several
    /// instances starting together are safe).
    pub async fn migrate(&self) -> Result<(), StartupError> {
        let r = match &self.db {
            Db::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await,
            Db::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
        };
        r.map_err(|e| StartupError::new("database migrations failed", e))
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> DbResult<()> {
        on_db!(&self.db, p => sqlx::query("SELECT 1").execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Whether the database can be written: one committed write of the probe row. A read-only
    /// file, mount or server, or a full disk, fails here.
    pub async fn check_writable(&self) -> DbResult<()> {
        const SQL: &str = "INSERT INTO readiness_probe (id, checked_at) VALUES (1, $1) \
            ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at";
        on_db!(&self.db, p => sqlx::query(SQL).bind(Ts::now()).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_db!(&self.db, p => p.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;
    use std::sync::atomic::Ordering;

    #[test]
    fn numbered_parameters_become_bare_question_marks_in_order() {
        assert_eq!(
            positional("VALUES ($1, $2), ($3, $4) WHERE x < $5 AND y = 'a'"),
            "VALUES (?, ?), (?, ?) WHERE x < ? AND y = 'a'"
        );
        assert_eq!(positional("($9, $10, $11)"), "(?, ?, ?)");
    }

    #[test]
    fn a_checkpoint_copies_again_beside_the_writers_while_many_frames_came_meanwhile() {
        assert!(copy_again(4000, 1), "the first pass's frames are many");
        assert!(copy_again(HELD_PASS_AT_MOST + 1, 3));
        assert!(!copy_again(HELD_PASS_AT_MOST, 1), "few enough to copy held");
        assert!(!copy_again(0, 2));
        assert!(
            !copy_again(4000, MAX_PASSES),
            "bounded however fast commits come"
        );
    }

    #[test]
    fn frames_after_a_pass_count_a_log_started_again_as_all_new() {
        assert_eq!(frames_after(5300, 5000), 300);
        assert_eq!(frames_after(5000, 5000), 0);
        assert_eq!(
            frames_after(40, 5000),
            40,
            "the log started again meanwhile"
        );
    }

    /// A store as the service opens it (no checkpoint inside commits) on a new file, with a
    /// table of 4 KiB rows: each row is at least a page of log.
    async fn service_store_with_pages() -> (tempfile::TempDir, Store, SqlitePool) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/ckpt.db", dir.path().display());
        let store = Store::connect_for_service(&url, 4).await.unwrap();
        let Db::Sqlite(pool) = &store.db else {
            unreachable!()
        };
        let pool = pool.clone();
        sqlx::query("CREATE TABLE pages (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        (dir, store, pool)
    }

    async fn log_frames(pool: &SqlitePool) -> i64 {
        // The log's size, from a pass over it (which also copies what is new in it).
        let (_, log, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(pool)
            .await
            .unwrap();
        log
    }

    async fn add_page(pool: &SqlitePool) {
        sqlx::query("INSERT INTO pages (body) VALUES (randomblob(4000))")
            .execute(pool)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_long_log_is_copied_beside_the_writers_then_started_again() {
        let (_dir, store, pool) = service_store_with_pages().await;
        // A short log is copied and left to grow.
        add_page(&pool).await;
        let short = store.checkpoint().await.unwrap().unwrap();
        assert!(
            short.log < RESTART_LOG_AT && short.held.is_none(),
            "{short:?}"
        );
        for _ in 0..RESTART_LOG_AT {
            add_page(&pool).await;
        }
        let long = store.checkpoint().await.unwrap().unwrap();
        // Nothing was committed during the first pass: the second one beside the writers
        // finds nothing new, and the held one copies nothing.
        assert_eq!(long.passes, 3, "{long:?}");
        assert_eq!(long.held, Some(0), "{long:?}");
        assert!(long.log >= RESTART_LOG_AT, "{long:?}");
        add_page(&pool).await;
        let after = log_frames(&pool).await;
        assert!(
            after < 10,
            "the next commit starts the log again: {after} frames"
        );
    }

    #[tokio::test]
    async fn a_checkpoint_under_steady_commits_still_starts_the_log_again() {
        let (_dir, store, pool) = service_store_with_pages().await;
        for _ in 0..2 * RESTART_LOG_AT {
            add_page(&pool).await;
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Commits take the writers' turn, as the service's do.
        let writer = tokio::spawn({
            let (store, pool, stop) = (store.clone(), pool.clone(), stop.clone());
            async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _turn = store.write_turn().await;
                    add_page(&pool).await;
                    n += 1;
                }
                n
            }
        });
        let done = store.checkpoint().await.unwrap().unwrap();
        stop.store(true, Ordering::Relaxed);
        let committed = writer.await.unwrap();
        assert!(done.held.is_some() && done.passes >= 3, "{done:?}");
        let before = done.log;
        assert!(before >= 2 * RESTART_LOG_AT, "{done:?}");
        assert!(done.passes <= MAX_PASSES + 1, "{done:?}");
        let after = log_frames(&pool).await;
        assert!(
            after < before,
            "the log started again ({before} frames before, {after} after, {committed} commits meanwhile)"
        );
    }

    #[tokio::test]
    async fn a_sqlite_file_that_cannot_be_opened_is_a_connection_fault() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/missing/dir/x.db", dir.path().display());
        let e = sqlx::SqliteConnection::connect(&url).await.unwrap_err();
        assert_eq!(ConnectionFault::of(&e), Some(ConnectionFault::Connecting));
        assert!(matches!(DbError::from(e), DbError::Unavailable(m) if m.starts_with("connecting")));
    }

    #[tokio::test]
    async fn statement_errors_are_not_connection_faults() {
        let mut c = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES ('a', 1)")
            .execute(&mut c)
            .await
            .unwrap();
        let dup = sqlx::query("INSERT INTO t VALUES ('a', 2)")
            .execute(&mut c)
            .await
            .unwrap_err();
        assert!(matches!(DbError::from(dup), DbError::Conflict));
        let null = sqlx::query("INSERT INTO t VALUES ('b', NULL)")
            .execute(&mut c)
            .await
            .unwrap_err();
        assert!(matches!(DbError::from(null), DbError::Other(_)));
        let bad = sqlx::query("SELEC 1").execute(&mut c).await.unwrap_err();
        assert!(matches!(DbError::from(bad), DbError::Other(_)));
        let none = sqlx::query_as::<_, (i64,)>("SELECT 1 WHERE 0")
            .fetch_one(&mut c)
            .await
            .unwrap_err();
        assert!(matches!(DbError::from(none), DbError::NotFound));
    }

    #[test]
    fn pool_and_io_errors_are_connection_faults() {
        for (e, fault) in [
            (sqlx::Error::PoolTimedOut, ConnectionFault::Acquiring),
            (sqlx::Error::PoolClosed, ConnectionFault::Acquiring),
            (
                sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()),
                ConnectionFault::Io,
            ),
            (sqlx::Error::WorkerCrashed, ConnectionFault::Closed),
            (
                sqlx::Error::Protocol("unexpected EOF".into()),
                ConnectionFault::Closed,
            ),
        ] {
            assert_eq!(ConnectionFault::of(&e), Some(fault), "{e}");
            assert!(matches!(DbError::from(e), DbError::Unavailable(_)));
        }
    }

    #[tokio::test]
    async fn a_busy_sqlite_file_is_a_connection_fault() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/busy.db?mode=rwc", dir.path().display());
        let mut a = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let mut b = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER)")
            .execute(&mut a)
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut a)
            .await
            .unwrap();
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut b)
            .await
            .unwrap();
        let e = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut b)
            .await
            .unwrap_err();
        assert_eq!(ConnectionFault::of(&e), Some(ConnectionFault::Busy), "{e}");
    }
}
