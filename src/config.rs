//! Settings from `TELEMENTAL_*` variables (or the matching flags), validated at start.

use crate::crypto::Keyring;
use clap::{Args, Parser, Subcommand};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "telemental",
    version,
    about = "Telemental health guideline service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Mint an HS256 bearer token with TELEMENTAL_JWT_SECRET.
    Token {
        #[arg(long)]
        tenant: String,
        /// Space-separated scopes, e.g. "plans:read plans:write"; SMART scopes the FHIR views
        /// honour (e.g. "system/CarePlan.rs") are accepted too.
        #[arg(long)]
        scope: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// The `sub` claim (the calling client or user).
        #[arg(long, default_value = "telemental-cli")]
        sub: String,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Re-encrypt every stored value under the current encryption key (and encrypt values
    /// written before encryption), online, in batches; then report the key ids still in use.
    /// Run again to resume after an interruption.
    Rekey {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        batch: i64,
    },
    /// The audit trail: verify its hash chains, export it, archive what is past the retention.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute every tenant's hash chain; exit 1 if a row was altered or removed.
    Verify,
    /// Write audit rows as JSON lines to standard output.
    Export {
        /// Only rows at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only rows before this instant (RFC 3339).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only this tenant's rows.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Move rows older than TELEMENTAL_AUDIT_RETENTION to a JSON-lines file (appended and
    /// synced before the rows are removed); the chain of what remains still verifies.
    Archive {
        /// The file to append archived rows to.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

// Value parsers do not repeat the variable's name nor (for secrets) the value: the message is
// put after the variable's name by `explain_cli_error`.
fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.len() < 32 {
        return Err("must be at least 32 bytes (256 bits) for HS256".into());
    }
    Ok(Secret(s.to_string()))
}

/// A database URL. `Debug` and `Display` hide its password; the URL itself is [`Self::expose`]d
/// only to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password (in the authority or a `password` query parameter) replaced
    /// by `***`; an unparsable URL is hidden whole.
    pub fn redacted(&self) -> String {
        let Ok(mut url) = url::Url::parse(&self.0) else {
            return "***".into();
        };
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        if url.query_pairs().any(|(k, _)| k.contains("password")) {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.contains("password") {
                        "***".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn parse_keyring(s: &str) -> Result<Keyring, String> {
    Keyring::parse(s)
}

fn parse_database_url(s: &str) -> Result<DatabaseUrl, String> {
    Ok(DatabaseUrl::new(s))
}

impl Cli {
    /// Parses the flags and `TELEMENTAL_*` variables. `Err(message)` for a bad value, naming its
    /// environment variable; anything else clap has to say (help, version, an unknown flag) is
    /// printed by clap, which exits.
    pub fn parse_or_explain() -> Result<Cli, String> {
        use clap::Parser;
        match Cli::try_parse() {
            Ok(cli) => Ok(cli),
            Err(e) => match explain_cli_error(&e) {
                Some(message) => Err(message),
                None => e.exit(),
            },
        }
    }
}

/// For a bad value of a setting: a message naming the environment variable (and the flag), with
/// the parser's reason and never the value of a hidden (secret) setting.
pub fn explain_cli_error(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    if !matches!(
        e.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let mut cmd = Cli::command();
    cmd.build(); // an argument renders as in the error only once built
    let setting = cmd.get_arguments().find(|a| a.to_string() == *arg)?;
    let var = setting.get_env()?.to_string_lossy().into_owned();
    let flag = setting
        .get_long()
        .map(|l| format!(" (--{l})"))
        .unwrap_or_default();
    let reason = match (std::error::Error::source(e), e.get(ContextKind::ValidValue)) {
        (Some(source), _) => source.to_string(),
        (None, Some(ContextValue::Strings(valid))) => {
            format!("must be one of {}", valid.join(", "))
        }
        _ => "invalid value".to_string(),
    };
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v))
            if !setting.is_hide_env_values_set() && !reason.contains(v.as_str()) =>
        {
            format!(" (got {v:?})")
        }
        _ => String::new(),
    };
    Some(format!("{var}{flag}: {reason}{value}"))
}

/// Durations such as `500ms`, `90s`, `15m`, `24h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} needs a unit: ms, s, m, h or d (e.g. 90s)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 90s, 15m, 24h or 7d"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{s:?} has an unknown unit; use ms, s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

/// How long audit rows are kept in the live table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Never,
    After(Duration),
}

fn parse_retention(s: &str) -> Result<Retention, String> {
    if s.trim() == "never" {
        return Ok(Retention::Never);
    }
    match parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(Retention::After(d)),
        _ => Err(format!(
            "TELEMENTAL_AUDIT_RETENTION must be `never` or a duration such as 2555d, not {s:?}"
        )),
    }
}

fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| "must be IP:PORT such as 127.0.0.1:8080 or 0.0.0.0:8080".to_string())
}

/// The service's public base URL: http(s), no query or fragment, kept without a trailing slash.
fn parse_public_url(s: &str) -> Result<String, String> {
    let u = url::Url::parse(s).map_err(|_| {
        format!("TELEMENTAL_PUBLIC_URL must be an absolute URL such as https://telemental.example.org, not {s:?}")
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.query().is_some() || u.fragment().is_some() {
        return Err(
            "TELEMENTAL_PUBLIC_URL must be an http:// or https:// URL without query or fragment"
                .into(),
        );
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Allowed browser origins, each `scheme://host[:port]` as browsers send it in `Origin`.
fn parse_origins_of(setting: &str, s: &str) -> Result<Origins, String> {
    let mut out = Vec::new();
    for o in s.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let u = url::Url::parse(o).map_err(|_| {
            format!("{setting}: {o:?} is not an origin such as https://ehr.example.org")
        })?;
        let origin = u.origin().ascii_serialization();
        if !matches!(u.scheme(), "http" | "https") || origin != o.trim_end_matches('/') {
            return Err(format!(
                "{setting}: {o:?} must be scheme://host[:port] with no path"
            ));
        }
        out.push(origin);
    }
    Ok(Origins(out))
}

fn parse_origins(s: &str) -> Result<Origins, String> {
    parse_origins_of("TELEMENTAL_CDS_ALLOWED_ORIGINS", s)
}

fn parse_fhir_origins(s: &str) -> Result<Origins, String> {
    parse_origins_of("TELEMENTAL_FHIR_ALLOWED_ORIGINS", s)
}

/// Allowed CORS origins, comma-separated in the setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(pub Vec<String>);

fn parse_url(s: &str) -> Result<String, String> {
    if s.starts_with("http://") || s.starts_with("https://") {
        Ok(s.to_string())
    } else {
        Err("must be an http:// or https:// URL".into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting is `global`: it may come before or after the subcommand
/// (`telemental --bind … serve` and `telemental serve --bind …` alike).
#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, global = true, env = "TELEMENTAL_BIND", default_value = "127.0.0.1:8080", value_parser = parse_bind)]
    pub bind: SocketAddr,
    /// sqlite://PATH (embedded) or postgres://… (many stateless instances).
    #[arg(
        long,
        global = true,
        env = "TELEMENTAL_DATABASE_URL",
        default_value = "sqlite://telemental.db",
        value_parser = parse_database_url,
        hide_env_values = true
    )]
    pub database_url: DatabaseUrl,
    /// Largest number of pooled database connections.
    #[arg(
        long,
        global = true,
        env = "TELEMENTAL_DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub database_max_connections: u32,
    /// HS256 shared secret for bearer tokens (at least 32 bytes).
    #[arg(long, global = true, env = "TELEMENTAL_JWT_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Keys that encrypt personal data at rest: `id:base64[,id:base64…]`, each 32 random
    /// bytes in standard base64. The first encrypts new writes; the others still decrypt.
    #[arg(long, global = true, env = "TELEMENTAL_ENCRYPTION_KEYS", value_parser = parse_keyring, hide_env_values = true)]
    pub encryption_keys: Option<Keyring>,
    /// A file holding the encryption keys in the same format (commas or one entry per line),
    /// when TELEMENTAL_ENCRYPTION_KEYS is not set.
    #[arg(long, global = true, env = "TELEMENTAL_ENCRYPTION_KEYS_FILE")]
    pub encryption_keys_file: Option<std::path::PathBuf>,
    /// JWKS URL for RS256/ES256 keys.
    #[arg(long, global = true, env = "TELEMENTAL_JWKS_URL", value_parser = parse_url)]
    pub jwks_url: Option<String>,
    /// Least time between two JWKS fetches triggered by an unknown `kid`.
    #[arg(long, global = true, env = "TELEMENTAL_JWKS_MIN_REFETCH", default_value = "10s", value_parser = parse_duration)]
    pub jwks_min_refetch: Duration,
    /// Longest a JWKS fetch may take (connect and body).
    #[arg(long, env = "TELEMENTAL_JWKS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub jwks_timeout: Duration,
    /// Longest token lifetime accepted: `exp - iat`, or `exp - now` without `iat`.
    #[arg(long, env = "TELEMENTAL_JWT_MAX_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    pub jwt_max_lifetime: Duration,
    /// Longest time a client may take to send a request's headers (then 408 and close).
    #[arg(long, env = "TELEMENTAL_HEADER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Longest time a client may take to send a whole request body (then 408 and close).
    #[arg(long, env = "TELEMENTAL_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// Most connections open at once (new ones wait in the listen backlog).
    #[arg(long, env = "TELEMENTAL_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most webhooks one tenant may register.
    #[arg(long, env = "TELEMENTAL_WEBHOOKS_PER_TENANT", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub webhooks_per_tenant: u32,
    /// Audit rows older than this may be archived by `telemental audit archive` (never by the
    /// service itself); `never` keeps every row.
    #[arg(long, env = "TELEMENTAL_AUDIT_RETENTION", default_value = "never", value_parser = parse_retention)]
    pub audit_retention: Retention,
    /// Required `iss` claim, when set.
    #[arg(long, global = true, env = "TELEMENTAL_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(
        long,
        global = true,
        env = "TELEMENTAL_JWT_AUDIENCE",
        default_value = "telemental"
    )]
    pub jwt_audience: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, global = true, env = "TELEMENTAL_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "TELEMENTAL_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Allow webhook URLs on loopback, private and link-local addresses.
    #[arg(long, global = true, env = "TELEMENTAL_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
    /// First retry delay of a failed webhook delivery; doubles after each failure, capped at 1 h.
    #[arg(long, global = true, env = "TELEMENTAL_WEBHOOK_RETRY_BASE", default_value = "5s", value_parser = parse_duration)]
    pub webhook_retry_base: Duration,
    /// Attempts before a delivery is dead-lettered (replayable through the API).
    #[arg(long, global = true, env = "TELEMENTAL_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,
    /// Timeout of one webhook POST.
    #[arg(long, global = true, env = "TELEMENTAL_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,
    /// Webhook deliveries one instance sends at once.
    #[arg(long, env = "TELEMENTAL_WEBHOOK_IN_FLIGHT", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub webhook_in_flight: u32,
    /// Of those, how many may go to one webhook, so a hung or slow receiver holds no more than
    /// its share and the others keep flowing.
    #[arg(long, env = "TELEMENTAL_WEBHOOK_IN_FLIGHT_PER_WEBHOOK", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub webhook_in_flight_per_webhook: u32,
    /// How long delivered outbox events, their deliveries and attempts are kept; dead letters
    /// are kept this long after they died (or until replayed).
    #[arg(long, env = "TELEMENTAL_OUTBOX_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub outbox_retention: Duration,
    /// How soon a routine fallback referral is due.
    #[arg(long, global = true, env = "TELEMENTAL_REFERRAL_DUE_ROUTINE", default_value = "7d", value_parser = parse_duration)]
    pub referral_due_routine: Duration,
    /// How soon an urgent fallback referral is due.
    #[arg(long, global = true, env = "TELEMENTAL_REFERRAL_DUE_URGENT", default_value = "24h", value_parser = parse_duration)]
    pub referral_due_urgent: Duration,
    /// How soon an emergency fallback referral is due.
    #[arg(long, global = true, env = "TELEMENTAL_REFERRAL_DUE_EMERGENCY", default_value = "4h", value_parser = parse_duration)]
    pub referral_due_emergency: Duration,
    /// How often the background worker sweeps for overdue referrals, due plan reviews and
    /// deliveries to retry (new events also wake it at once).
    #[arg(long, global = true, env = "TELEMENTAL_WORKER_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub worker_interval: Duration,
    /// The service's public base URL (e.g. https://telemental.example.org): absolute `fullUrl`s
    /// and paging links of FHIR Bundles, and the CDS endpoint URLs accepted as a token's `aud`.
    #[arg(long, env = "TELEMENTAL_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// Browser origins allowed to call the CDS Hooks endpoints (CORS), comma-separated.
    #[arg(long, env = "TELEMENTAL_CDS_ALLOWED_ORIGINS", value_parser = parse_origins, default_value = "")]
    pub cds_allowed_origins: Origins,
    /// Browser origins allowed to read the FHIR views (CORS), comma-separated: SMART apps
    /// running in an EHR's browser.
    #[arg(long, env = "TELEMENTAL_FHIR_ALLOWED_ORIGINS", value_parser = parse_fhir_origins, default_value = "")]
    pub fhir_allowed_origins: Origins,
    /// Issuers (`iss`) allowed to call the CDS Hooks endpoints, comma-separated; any issuer
    /// whose key is in the JWKS when empty.
    #[arg(long, env = "TELEMENTAL_CDS_ISSUERS", value_delimiter = ',')]
    pub cds_issuers: Vec<String>,
    /// Equity report: counts from 1 to this − 1 are shown as "<N" (small-number suppression).
    #[arg(long, env = "TELEMENTAL_REPORT_SUPPRESSION", default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=100))]
    pub report_suppression: u32,
    /// How long to wait for in-flight requests on shutdown.
    #[arg(long, global = true, env = "TELEMENTAL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

impl Settings {
    pub fn referral_due(&self) -> crate::domain::referral::DueDurations {
        crate::domain::referral::DueDurations {
            routine: self.referral_due_routine,
            urgent: self.referral_due_urgent,
            emergency: self.referral_due_emergency,
        }
    }

    /// Dev mode: no key material configured.
    pub fn dev_mode(&self) -> bool {
        self.jwt_secret.is_none() && self.jwks_url.is_none()
    }

    /// The encryption keys: TELEMENTAL_ENCRYPTION_KEYS, else the file named by
    /// TELEMENTAL_ENCRYPTION_KEYS_FILE, else (dev mode only) a key file beside the SQLite
    /// database, made on first start (mode 0600) and reused. `Err` names the variable.
    pub fn keyring(&self) -> Result<Keyring, String> {
        if let Some(k) = &self.encryption_keys {
            return Ok(k.clone());
        }
        if let Some(path) = &self.encryption_keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "TELEMENTAL_ENCRYPTION_KEYS_FILE: cannot read {}: {e}",
                    path.display()
                )
            })?;
            #[cfg(unix)]
            if let Ok(m) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if m.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(file = %path.display(), "the encryption key file can be read by other users; chmod 600 it");
                }
            }
            return Keyring::parse(&text)
                .map_err(|e| format!("TELEMENTAL_ENCRYPTION_KEYS_FILE ({}): {e}", path.display()));
        }
        if !self.dev_mode() {
            return Err(
                "TELEMENTAL_ENCRYPTION_KEYS (or TELEMENTAL_ENCRYPTION_KEYS_FILE) must be \
                set outside dev mode: `id:base64-key`, a 32-byte key in standard base64 \
                (e.g. `openssl rand -base64 32`)"
                    .into(),
            );
        }
        self.dev_keyring()
    }

    /// Dev mode's key: in `<database file>.keys`, made once and reused, so restarts read
    /// what earlier runs wrote; a database in memory gets a key that dies with it.
    fn dev_keyring(&self) -> Result<Keyring, String> {
        use std::str::FromStr;
        let no_file = || {
            "TELEMENTAL_ENCRYPTION_KEYS is not set and dev mode keeps its key beside a SQLite \
             database file; set TELEMENTAL_ENCRYPTION_KEYS (or TELEMENTAL_ENCRYPTION_KEYS_FILE)"
                .to_string()
        };
        if !self.database_url.starts_with("sqlite:") {
            return Err(no_file());
        }
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&self.database_url)
            .map_err(|_| no_file())?;
        let db = opts.get_filename();
        if db.as_os_str().is_empty() || db == std::path::Path::new(":memory:") {
            return Keyring::parse(&Keyring::generate_entry("dev"));
        }
        let mut path = db.as_os_str().to_owned();
        path.push(".keys");
        let path = std::path::PathBuf::from(path);
        let fail = |e: &dyn fmt::Display| {
            format!(
                "dev mode's encryption key file {} (TELEMENTAL_ENCRYPTION_KEYS is not set): {e}",
                path.display()
            )
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Keyring::parse(&text).map_err(|e| fail(&e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let entry = Keyring::generate_entry("dev");
                let mut f = opts.open(&path).map_err(|e| fail(&e))?;
                f.write_all(format!("{entry}\n").as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| fail(&e))?;
                tracing::warn!(file = %path.display(), "dev mode: made an encryption key file (keep it with the database)");
                Keyring::parse(&entry)
            }
            Err(e) => Err(fail(&e)),
        }
    }

    /// Checks across settings that clap cannot express.
    pub fn check(&self) -> Result<(), String> {
        if self.dev_mode() && !self.bind.ip().is_loopback() {
            return Err(format!(
                "dev mode (neither TELEMENTAL_JWT_SECRET nor TELEMENTAL_JWKS_URL is set) only \
                 listens on loopback; TELEMENTAL_BIND={} is not. Configure a secret or a JWKS URL.",
                self.bind
            ));
        }
        if self.jwt_audience.trim().is_empty() {
            return Err("TELEMENTAL_JWT_AUDIENCE must not be empty".into());
        }
        if self.worker_interval.is_zero()
            || self.webhook_retry_base.is_zero()
            || self.webhook_timeout.is_zero()
        {
            return Err("TELEMENTAL_WORKER_INTERVAL, TELEMENTAL_WEBHOOK_RETRY_BASE and TELEMENTAL_WEBHOOK_TIMEOUT must be above zero".into());
        }
        if self.jwks_timeout.is_zero()
            || self.jwt_max_lifetime.is_zero()
            || self.header_timeout.is_zero()
            || self.body_timeout.is_zero()
        {
            return Err("TELEMENTAL_JWKS_TIMEOUT, TELEMENTAL_JWT_MAX_LIFETIME, TELEMENTAL_HEADER_TIMEOUT and TELEMENTAL_BODY_TIMEOUT must be above zero".into());
        }
        if self.webhook_in_flight_per_webhook > self.webhook_in_flight {
            return Err(format!(
                "TELEMENTAL_WEBHOOK_IN_FLIGHT_PER_WEBHOOK ({}) cannot be above TELEMENTAL_WEBHOOK_IN_FLIGHT ({})",
                self.webhook_in_flight_per_webhook, self.webhook_in_flight
            ));
        }
        if self.outbox_retention < Duration::from_secs(1) {
            return Err("TELEMENTAL_OUTBOX_RETENTION must be at least 1s".into());
        }
        if self.database_max_connections == 0 {
            return Err("TELEMENTAL_DATABASE_MAX_CONNECTIONS must be at least 1".into());
        }
        Ok(())
    }

    /// Settings for tests and embedding: defaults with the given database and secret.
    pub fn for_tests(database_url: &str, secret: &str) -> Settings {
        Settings {
            bind: "127.0.0.1:0".parse().expect("loopback"),
            database_url: DatabaseUrl::new(database_url),
            database_max_connections: 5,
            jwt_secret: Some(Secret(secret.to_string())),
            encryption_keys: Some(Keyring::parse(crate::crypto::TEST_KEYS).expect("test key")),
            encryption_keys_file: None,
            jwks_url: None,
            jwks_min_refetch: Duration::from_secs(10),
            jwks_timeout: Duration::from_secs(5),
            jwt_max_lifetime: Duration::from_secs(86_400),
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            webhooks_per_tenant: 50,
            audit_retention: Retention::Never,
            jwt_issuer: None,
            jwt_audience: "telemental".into(),
            log: "warn".into(),
            log_format: LogFormat::Text,
            shutdown_timeout: Duration::from_secs(1),
            webhook_allow_private: false,
            webhook_retry_base: Duration::from_secs(5),
            webhook_max_attempts: 12,
            webhook_timeout: Duration::from_secs(10),
            webhook_in_flight: 32,
            webhook_in_flight_per_webhook: 8,
            outbox_retention: Duration::from_secs(30 * 86_400),
            referral_due_routine: Duration::from_secs(7 * 86_400),
            referral_due_urgent: Duration::from_secs(86_400),
            referral_due_emergency: Duration::from_secs(4 * 3600),
            worker_interval: Duration::from_millis(200),
            public_url: None,
            cds_allowed_origins: Origins::default(),
            fhir_allowed_origins: Origins::default(),
            cds_issuers: Vec::new(),
            report_suppression: 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_variable_the_file_or_dev_modes_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let mut s = Settings::for_tests(&format!("sqlite://{}", db.display()), &"k".repeat(32));
        assert_eq!(s.keyring().unwrap().ids(), ["test"]);
        s.encryption_keys = None;
        let e = s.keyring().unwrap_err();
        assert!(e.starts_with("TELEMENTAL_ENCRYPTION_KEYS"), "{e}");
        let file = dir.path().join("keys");
        std::fs::write(&file, "new:ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=\n").unwrap();
        s.encryption_keys_file = Some(file.clone());
        assert_eq!(s.keyring().unwrap().ids(), ["new"]);
        std::fs::write(&file, "new:short").unwrap();
        let e = s.keyring().unwrap_err();
        assert!(e.starts_with("TELEMENTAL_ENCRYPTION_KEYS_FILE"), "{e}");
        // Dev mode: a key file beside the database, made once (0600) and reused.
        s.encryption_keys_file = None;
        s.jwt_secret = None;
        let first = s.keyring().unwrap();
        let key_file = dir.path().join("t.db.keys");
        let text = std::fs::read_to_string(&key_file).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = s.keyring().unwrap();
        assert_eq!(first.ids(), again.ids());
        assert_eq!(std::fs::read_to_string(&key_file).unwrap(), text);
        let debug = format!("{s:?}");
        let key = text.trim().split_once(':').unwrap().1;
        assert!(!debug.contains(key), "{debug}");
        assert!(!format!("{first:?}").contains(key));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "10", "s", "1.5h", "3w", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dev_mode_refuses_a_public_bind() {
        let mut s = Settings::for_tests("sqlite://x.db", &"k".repeat(32));
        s.jwt_secret = None;
        s.bind = "0.0.0.0:8080".parse().unwrap();
        assert!(s.check().is_err());
        s.bind = "127.0.0.1:8080".parse().unwrap();
        assert!(s.check().is_ok());
        s.bind = "0.0.0.0:8080".parse().unwrap();
        s.jwt_secret = Some(Secret("k".repeat(32)));
        assert!(s.check().is_ok());
    }

    #[test]
    fn public_url_and_origins_are_checked() {
        assert_eq!(
            parse_public_url("https://tm.example.org/").unwrap(),
            "https://tm.example.org"
        );
        assert_eq!(
            parse_public_url("http://127.0.0.1:8080/base").unwrap(),
            "http://127.0.0.1:8080/base"
        );
        for bad in ["tm.example.org", "ftp://x.org", "https://x.org/?a=1", ""] {
            assert!(parse_public_url(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_origins("https://ehr.example.org, http://localhost:3000").unwrap(),
            Origins(vec![
                "https://ehr.example.org".into(),
                "http://localhost:3000".into()
            ])
        );
        assert_eq!(parse_origins("").unwrap(), Origins::default());
        for bad in [
            "https://ehr.example.org/app",
            "ehr.example.org",
            "file:///x",
        ] {
            assert!(parse_origins(bad).is_err(), "{bad:?}");
            let e = parse_fhir_origins(bad).unwrap_err();
            assert!(e.starts_with("TELEMENTAL_FHIR_ALLOWED_ORIGINS"), "{e}");
        }
    }

    #[test]
    fn flags_work_before_and_after_the_subcommand() {
        for args in [
            &["telemental", "--bind", "127.0.0.1:9999", "serve"][..],
            &["telemental", "serve", "--bind", "127.0.0.1:9999"][..],
        ] {
            let cli = Cli::try_parse_from(args).expect("parses");
            assert!(matches!(cli.command, Some(Command::Serve)));
            assert_eq!(cli.settings.bind, "127.0.0.1:9999".parse().unwrap());
        }
        let cli = Cli::try_parse_from([
            "telemental",
            "token",
            "--tenant",
            "t",
            "--scope",
            "plans:read",
            "--jwt-audience",
            "other",
        ])
        .expect("parses");
        assert_eq!(cli.settings.jwt_audience, "other");
    }

    #[test]
    fn settings_debug_hides_database_passwords_and_secrets() {
        let url = "postgres://tm:hunter2@db:5432/tm?sslmode=require&password=also-secret";
        let secret = "k".repeat(40);
        let s = Settings::for_tests(url, &secret);
        let debug = format!("{s:?}");
        for hidden in ["hunter2", "also-secret", secret.as_str()] {
            assert!(!debug.contains(hidden), "{hidden} printed: {debug}");
        }
        assert!(
            debug.contains("postgres://tm:***@db:5432/tm?sslmode=require&password=***"),
            "{debug}"
        );
        assert_eq!(
            s.database_url.expose(),
            url,
            "the real URL is kept to connect"
        );
        assert_eq!(
            DatabaseUrl::new("sqlite://telemental.db").to_string(),
            "sqlite://telemental.db"
        );
        assert_eq!(DatabaseUrl::new("not a url").redacted(), "***");
    }

    #[test]
    fn a_bad_value_names_its_environment_variable() {
        use clap::Parser;
        for (args, says) in [
            (
                ["--shutdown-timeout", "soon"],
                "TELEMENTAL_SHUTDOWN_TIMEOUT (--shutdown-timeout): \"soon\" is not a duration",
            ),
            (
                ["--webhook-retry-base", "5"],
                "TELEMENTAL_WEBHOOK_RETRY_BASE (--webhook-retry-base): \"5\" needs a unit",
            ),
            (
                ["--bind", "localhost"],
                "TELEMENTAL_BIND (--bind): must be IP:PORT",
            ),
            (
                ["--webhook-max-attempts", "0"],
                "TELEMENTAL_WEBHOOK_MAX_ATTEMPTS (--webhook-max-attempts): ",
            ),
            (
                ["--log-format", "xml"],
                "TELEMENTAL_LOG_FORMAT (--log-format): must be one of text, json",
            ),
            (
                ["--jwt-secret", "short-secret-value"],
                "TELEMENTAL_JWT_SECRET (--jwt-secret): must be at least 32 bytes",
            ),
        ] {
            let e = Cli::try_parse_from(std::iter::once("telemental").chain(args)).unwrap_err();
            let message = explain_cli_error(&e).expect("a bad value is explained");
            assert!(message.starts_with(says), "{args:?}: {message}");
        }
        let e =
            Cli::try_parse_from(["telemental", "--jwt-secret", "short-secret-value"]).unwrap_err();
        assert!(
            !explain_cli_error(&e)
                .unwrap()
                .contains("short-secret-value"),
            "a secret's value is not echoed"
        );
        let e = Cli::try_parse_from(["telemental", "--no-such-flag"]).unwrap_err();
        assert_eq!(explain_cli_error(&e), None, "clap explains the rest itself");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = parse_secret(&"x".repeat(40)).unwrap();
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(parse_secret("short").is_err());
    }
}
