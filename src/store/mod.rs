//! Storage on two engines behind one interface.
//!
//! The same SQL text runs on SQLite and PostgreSQL (both accept `$1` placeholders, `RETURNING`
//! and `ON CONFLICT`); `on_db!` expands each query once per engine so both are type-checked.
//! Engine-specific column types are handled by the migrations and by [`Ts`].

mod audit;
pub mod cache;
pub mod forms;
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
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(sqlx::Error),
    /// A stored row that this build cannot read (see `forms`).
    #[error(transparent)]
    Unreadable(#[from] forms::FormError),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => DbError::NotFound,
            sqlx::Error::Database(d) if d.is_unique_violation() => DbError::Conflict,
            sqlx::Error::Database(d) => {
                let code = d.code().unwrap_or_default();
                // SQLite busy/locked; PostgreSQL connection exceptions (08xxx), shutdown
                // (57P0x), too many connections (53300), serialization/deadlock (40xxx).
                let transient = matches!(code.as_ref(), "5" | "6" | "261" | "517" | "53300")
                    || code.starts_with("08")
                    || code.starts_with("57P0")
                    || code.starts_with("40");
                // A database that cannot be written (read-only file, mount or server, full
                // disk, I/O error, corruption) is unavailable to the client, never a 500:
                // SQLite READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB (primary codes);
                // PostgreSQL read_only_sql_transaction, disk_full, io_error, data_corrupted.
                let sqlite_primary = d
                    .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                    .and_then(|_| code.parse::<i64>().ok())
                    .map(|c| c & 0xff);
                let unwritable = matches!(sqlite_primary, Some(8 | 10 | 11 | 13 | 14 | 26))
                    || matches!(code.as_ref(), "25006" | "53100" | "58030" | "XX001" | "XX002");
                if transient || unwritable {
                    DbError::Unavailable(format!("database error code {code}"))
                } else {
                    DbError::Other(e)
                }
            }
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            // A connection cut mid-handshake surfaces as a protocol error.
            | sqlx::Error::Protocol(_) => DbError::Unavailable(e.to_string()),
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
    /// Holds the SQLite file's lock (and its cache) for as long as a store uses it.
    _owner: Option<std::sync::Arc<SqliteOwner>>,
    /// The SQLite database file.
    file: Option<std::path::PathBuf>,
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

impl Store {
    /// Opens a pool for the URL's engine. PostgreSQL pools connect lazily, so a database that is
    /// down at start-up (or later) gives 503s until it returns, never a crash.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, String> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| format!("invalid SQLite URL: {e}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // NORMAL: a commit is not flushed by itself; a request that must be durable
                // before its answer (every write, every audit row) waits for `durable()`,
                // which flushes once for all commits made meanwhile (`sync.rs`). SQLite still
                // flushes around checkpoints, as it must for NORMAL to be safe.
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let file = opts.get_filename().to_path_buf();
            let on_disk = !file.as_os_str().is_empty() && file != std::path::Path::new(":memory:");
            let sync = on_disk.then(|| sync::Syncer::start(file.clone()));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await
                .map_err(|e| format!("cannot open SQLite database: {e}"))?;
            Ok(Store {
                db: Db::Sqlite(pool),
                sync,
                cache: None,
                _owner: None,
                file: on_disk.then_some(file),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(3))
                .connect_lazy_with(opts);
            Ok(Store {
                db: Db::Postgres(pool),
                sync: None,
                cache: None,
                _owner: None,
                file: None,
            })
        } else {
            Err("TELEMENTAL_DATABASE_URL must start with sqlite:// or postgres://".into())
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

    /// Returns once every commit this process made before the call is on disk. Call it after
    /// a commit whose request is answered as done (a write, an audit row of a read).
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
    pub async fn migrate(&self) -> Result<(), String> {
        let r = match &self.db {
            Db::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await,
            Db::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
        };
        r.map_err(|e| format!("migration failed: {e}"))
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
