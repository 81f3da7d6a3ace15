use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use telemental::auth::{random_secret, Authenticator, Scope};
use telemental::config::{AuditCommand, Cli, Command, LogFormat, Retention, Settings};
use telemental::error::error_chain;
use telemental::store::{Store, Ts};
use telemental::Application;

/// Logging to stderr through a thread of its own. The HTTP workers only hand each line over:
/// a write to stderr can block (a log file whose dirty pages the kernel throttles, a full pipe
/// to a log collector), and a worker blocked in a write holds up every connection it serves
/// (README, *The service's log*). When the handover buffer is full the line is
/// dropped rather than the worker held, and counted in `telemental_log_lines_dropped_total`.
/// The guard flushes what is buffered when it is dropped, at the end of the command.
fn init_tracing(
    settings: &Settings,
) -> Result<tracing_appender::non_blocking::WorkerGuard, String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .map_err(|e| format!("TELEMENTAL_LOG (--log): {e}"))?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("telemental-log")
        .finish(std::io::stderr());
    telemental::http::observe::count_dropped_log_lines(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        // Colour codes only for a person at a terminal, never into a file, pipe or journal.
        .with_ansi(std::io::stderr().is_terminal());
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(guard)
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("telemental: {msg}");
    ExitCode::from(2)
}

/// Rust's allocations go to jemalloc. glibc's malloc held two arenas (see below) behind locks
/// that every thread shared: under CDS load the writer, freeing the audit rows the actix workers
/// had allocated, kept waking threads that waited on an arena's lock. jemalloc's per-thread
/// caches take those frees without a lock: up to 30 % less CPU per request (16 % for a CDS
/// call), for about 6 MiB more peak RSS (README, *jemalloc for Rust's allocations*).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once before its first allocation (the prefixed build's name for
/// `malloc_conf`): freed pages go back to the system after about a second rather than ten, which
/// kept the peak RSS of `scripts/bench.sh` 1–2 MiB lower. `_RJEM_MALLOC_CONF` in the
/// environment still overrides it.
#[cfg(not(target_env = "msvc"))]
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_CONF: &[u8; 20] = b"dirty_decay_ms:1000\0";

/// glibc's malloc still serves the C libraries (SQLite's page cache, AWS-LC). glibc gives each
/// thread that allocates its own malloc arena (up to 8 per core), and memory freed into one
/// arena is not reused by the others: with actix's workers, tokio's and sqlx's threads all
/// allocating, that cost about 18 MiB of resident memory under load for nothing. Two arenas are
/// enough for what the C code allocates.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn cap_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any positive value.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn cap_malloc_arenas() {}

#[actix_web::main]
async fn main() -> ExitCode {
    cap_malloc_arenas();
    let cli = match Cli::parse_or_explain() {
        Ok(cli) => cli,
        Err(message) => return fail(message),
    };
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            match serde_json::to_string_pretty(&telemental::openapi_json()) {
                Ok(doc) => println!("{doc}"),
                Err(e) => return fail(e),
            }
            ExitCode::SUCCESS
        }
        Command::Token {
            tenant,
            scope,
            ttl,
            sub,
        } => {
            if settings.jwt_secret.is_none() {
                return fail(
                    "`token` needs TELEMENTAL_JWT_SECRET (the secret the service verifies with)",
                );
            }
            let unknown: Vec<&str> = scope
                .split_whitespace()
                .filter(|s| {
                    !Scope::ALL.iter().any(|k| k.as_str() == *s)
                        && !telemental::fhir::scopes::is_honoured_smart(s)
                })
                .collect();
            if !unknown.is_empty() {
                return fail(format!(
                    "unknown scope(s): {} (neither the service's own nor SMART scopes the FHIR views honour)",
                    unknown.join(" ")
                ));
            }
            if ttl > settings.jwt_max_lifetime.as_secs() {
                return fail(format!(
                    "--ttl {ttl} is over TELEMENTAL_JWT_MAX_LIFETIME ({} s): the service would refuse the token",
                    settings.jwt_max_lifetime.as_secs()
                ));
            }
            let auth = match Authenticator::new(&settings, None) {
                Ok(a) => a,
                Err(e) => return fail(e),
            };
            match auth.mint(&tenant, &sub, &scope, Duration::from_secs(ttl)) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Audit { action } => {
            let _log = match init_tracing(&settings) {
                Ok(guard) => guard,
                Err(e) => return fail(e),
            };
            let store = match Store::connect(&settings.database_url, 1).await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            if let Err(e) = store.migrate().await {
                return fail(e);
            }
            // Rows the service has not sealed yet (it seals within about a second; it may be
            // stopped) are sealed first, so that verify, export and archive see whole chains.
            loop {
                match store.seal_audit(1000).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return fail(format!("cannot seal the audit trail: {e}")),
                }
            }
            let code = audit_command(&store, &settings, action).await;
            store.close().await;
            code
        }
        Command::Rekey { batch } => {
            let _log = match init_tracing(&settings) {
                Ok(guard) => guard,
                Err(e) => return fail(e),
            };
            let keys = match settings.keyring() {
                Ok(k) => k,
                Err(e) => return fail(e),
            };
            let store = match Store::connect(&settings.database_url, 2).await {
                Ok(s) => s.with_keys(keys),
                Err(e) => return fail(error_chain(&e)),
            };
            if let Err(e) = store.migrate().await {
                return fail(error_chain(&e));
            }
            let code = rekey(&store, batch).await;
            store.close().await;
            code
        }
        Command::Migrate => {
            let _log = match init_tracing(&settings) {
                Ok(guard) => guard,
                Err(e) => return fail(e),
            };
            let store = match Store::connect(&settings.database_url, 1).await {
                Ok(s) => s,
                Err(e) => return fail(error_chain(&e)),
            };
            match store.migrate().await {
                Ok(()) => {
                    eprintln!("telemental: migrations applied ({})", store.engine());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(error_chain(&e)),
            }
        }
        Command::Serve => {
            let _log = match init_tracing(&settings) {
                Ok(guard) => guard,
                Err(e) => return fail(e),
            };
            if let Err(e) = settings.check() {
                return fail(e);
            }
            let dev_secret = settings.dev_mode().then(random_secret);
            let app = match Application::build(&settings, dev_secret.as_deref(), true).await {
                Ok(a) => a,
                Err(e) => return fail(error_chain(&e)),
            };
            if let Some(secret) = &dev_secret {
                let auth =
                    Authenticator::new(&settings, Some(secret)).expect("dev secret is valid");
                let token = auth
                    .mint(
                        "dev",
                        "dev-user",
                        &Scope::all_joined(),
                        Duration::from_secs(24 * 3600),
                    )
                    .expect("dev token");
                println!(
                    "telemental: DEV MODE (no TELEMENTAL_JWT_SECRET or TELEMENTAL_JWKS_URL): tokens are \
                     signed with a random secret that dies with this process.\n\
                     Dev token (tenant \"dev\", all scopes, valid 24 h):\n{token}"
                );
            }
            tracing::info!(
                bind = %settings.bind,
                port = app.port(),
                database = app.store.engine(),
                "telemental listening; docs at /docs/"
            );
            match app.run_until_stopped().await {
                Ok(()) => {
                    tracing::info!("telemental stopped");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(error_chain(&e)),
            }
        }
    }
}

/// `telemental rekey`: passes over every sealed column until one rewrites nothing; progress
/// on standard error, then one JSON line per column and the key ids in use on standard output.
async fn rekey(store: &Store, batch: i64) -> ExitCode {
    use telemental::store::keys::{ColumnReport, COLUMNS};
    let current = store.keys().current_id().unwrap_or_default().to_string();
    eprintln!("telemental: rekey to key `{current}`, {batch} rows per transaction");
    let mut last: Vec<(&str, ColumnReport)> = Vec::new();
    for pass in 1..=3 {
        last.clear();
        for c in COLUMNS {
            let report = store
                .rekey_column(c, batch, |r| {
                    eprintln!(
                        "telemental: pass {pass}: {}: {} rows read, {} rewritten, {} failed",
                        c.name, r.rows, r.rewritten, r.failed
                    )
                })
                .await;
            match report {
                Ok(r) => last.push((c.name, r)),
                Err(e) => {
                    return fail(format!(
                        "rekey stopped at {}: {e} (run it again to resume)",
                        c.name
                    ))
                }
            }
        }
        if last.iter().all(|(_, r)| r.rewritten == 0) {
            break;
        }
    }
    if let Err(e) = store.flush_old_values().await {
        eprintln!("telemental: could not checkpoint the SQLite WAL ({e}); run rekey again later");
    }
    let mut in_use: std::collections::BTreeMap<String, u64> = Default::default();
    for (name, r) in &last {
        println!(
            "{}",
            serde_json::json!({"table": name, "rows": r.rows, "rewritten": r.rewritten, "failed": r.failed, "keys": r.keys})
        );
        for (k, n) in &r.keys {
            *in_use.entry(k.clone()).or_default() += n;
        }
    }
    println!(
        "{}",
        serde_json::json!({"current_key": current, "keys_in_use": in_use})
    );
    let failed: u64 = last.iter().map(|(_, r)| r.failed).sum();
    let others: Vec<&String> = in_use.keys().filter(|k| **k != current).collect();
    if failed > 0 {
        eprintln!(
            "telemental: {failed} value(s) do not open (see the log for their key ids); they keep their old encryption"
        );
        return ExitCode::from(1);
    }
    if others.is_empty() {
        eprintln!("telemental: every value is under key `{current}`; other keys can be removed");
    } else {
        eprintln!(
            "telemental: still in use besides `{current}`: {} (values written meanwhile by a process with an older key list; run rekey again)",
            others.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    ExitCode::SUCCESS
}

/// `telemental audit …`: run against the configured database, never by the service itself.
async fn audit_command(store: &Store, settings: &Settings, action: AuditCommand) -> ExitCode {
    use std::io::Write;
    match action {
        AuditCommand::Verify => {
            let reports = match store.verify_audit().await {
                Ok(r) => r,
                Err(e) => return fail(e),
            };
            let mut broken = false;
            for r in &reports {
                // One JSON object per tenant: what was checked, the head to record elsewhere,
                // and the problems found.
                println!("{}", serde_json::to_string(r).unwrap_or_default());
                broken |= !r.problems.is_empty();
            }
            if broken {
                eprintln!("telemental: the audit trail has been tampered with (see `problems`)");
                ExitCode::from(1)
            } else {
                eprintln!(
                    "telemental: {} audit chain(s) verified, {} rows",
                    reports.len(),
                    reports.iter().map(|r| r.rows).sum::<u64>()
                );
                ExitCode::SUCCESS
            }
        }
        AuditCommand::Export {
            since,
            until,
            tenant,
        } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let r = store
                .export_audit(
                    since.map(Ts::from),
                    until.map(Ts::from),
                    tenant.as_deref(),
                    |row| {
                        serde_json::to_writer(&mut out, row)?;
                        out.write_all(b"\n")
                    },
                )
                .await;
            match r.and_then(|n| out.flush().map(|_| n).map_err(|e| e.to_string())) {
                Ok(n) => {
                    eprintln!("telemental: {n} audit rows exported");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        AuditCommand::Archive { out } => {
            let Retention::After(keep) = settings.audit_retention else {
                return fail(
                    "TELEMENTAL_AUDIT_RETENTION is `never`: every audit row is kept; set a retention to archive",
                );
            };
            let cutoff = match chrono::Duration::from_std(keep)
                .ok()
                .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
            {
                Some(c) => Ts::from(c),
                None => return fail("TELEMENTAL_AUDIT_RETENTION is too long"),
            };
            let file = match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&out)
            {
                Ok(f) => f,
                Err(e) => return fail(format!("cannot open {}: {e}", out.display())),
            };
            let file = std::cell::RefCell::new(std::io::BufWriter::new(file));
            let r = store
                .archive_audit(
                    cutoff,
                    |row| {
                        let mut f = file.borrow_mut();
                        serde_json::to_writer(&mut *f, row)?;
                        f.write_all(b"\n")
                    },
                    || {
                        let mut f = file.borrow_mut();
                        f.flush()?;
                        f.get_ref().sync_all()
                    },
                )
                .await;
            match r {
                Ok(done) => {
                    for (tenant, n) in &done {
                        eprintln!("telemental: tenant {tenant:?}: {n} audit rows archived");
                    }
                    if done.is_empty() {
                        eprintln!("telemental: no audit rows are past the retention");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}
