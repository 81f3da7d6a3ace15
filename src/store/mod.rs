//! Storage on two engines behind one interface.
//!
//! The same SQL text runs on SQLite and PostgreSQL (both accept `$1` placeholders, `RETURNING`
//! and `ON CONFLICT`); `on_db!` expands each query once per engine so both are type-checked.
//! Engine-specific column types are handled by the migrations and by [`Ts`].

mod audit;
pub mod outbox;
mod records;
pub mod referrals;
mod session_checks;
mod ts;

pub use audit::{AuditEntry, AuditFilter, AuditRow};
pub use records::{ListQuery, Record, RecordTable, UpdateError, PLANS, SAFETY_PROTOCOLS};
pub use session_checks::{CheckRow, NewCheck};
pub use ts::Ts;

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
        // SQLITE_CANTOPEN, SQLITE_NOTADB (the file is gone or replaced)
        14 | 26 => Some(ConnectionFault::Connecting),
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
}

impl Store {
    /// Opens a pool for the URL's engine. PostgreSQL pools connect lazily, so a database that is
    /// down at start-up (or later) gives 503s until it returns, never a crash.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StartupError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| {
                    StartupError::new("TELEMENTAL_DATABASE_URL is not a valid SQLite URL", e)
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit is on disk before we answer 201 (survives power loss too).
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await
                .map_err(|e| StartupError::new("cannot open the SQLite database", e))?;
            Ok(Store {
                db: Db::Sqlite(pool),
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
            })
        } else {
            Err(StartupError::msg(
                "TELEMENTAL_DATABASE_URL must start with sqlite:// or postgres://",
            ))
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

    pub async fn close(&self) {
        on_db!(&self.db, p => p.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

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
