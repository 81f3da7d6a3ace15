//! Settings from `TELEMENTAL_*` variables (or the matching flags), validated at start.

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
        /// Space-separated scopes, e.g. "plans:read plans:write".
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
}

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.len() < 32 {
        return Err("TELEMENTAL_JWT_SECRET must be at least 32 bytes (256 bits) for HS256".into());
    }
    Ok(Secret(s.to_string()))
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

fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("TELEMENTAL_BIND must be IP:PORT such as 127.0.0.1:8080 or 0.0.0.0:8080, not {s:?}")
    })
}

fn parse_url(s: &str) -> Result<String, String> {
    if s.starts_with("http://") || s.starts_with("https://") {
        Ok(s.to_string())
    } else {
        Err("TELEMENTAL_JWKS_URL must be an http:// or https:// URL".into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "TELEMENTAL_BIND", default_value = "127.0.0.1:8080", value_parser = parse_bind)]
    pub bind: SocketAddr,
    /// sqlite://PATH (embedded) or postgres://… (many stateless instances).
    #[arg(
        long,
        env = "TELEMENTAL_DATABASE_URL",
        default_value = "sqlite://telemental.db"
    )]
    pub database_url: String,
    /// Largest number of pooled database connections.
    #[arg(
        long,
        env = "TELEMENTAL_DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub database_max_connections: u32,
    /// HS256 shared secret for bearer tokens (at least 32 bytes).
    #[arg(long, env = "TELEMENTAL_JWT_SECRET", value_parser = parse_secret, hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// JWKS URL for RS256/ES256 keys.
    #[arg(long, env = "TELEMENTAL_JWKS_URL", value_parser = parse_url)]
    pub jwks_url: Option<String>,
    /// Least time between two JWKS fetches triggered by an unknown `kid`.
    #[arg(long, env = "TELEMENTAL_JWKS_MIN_REFETCH", default_value = "10s", value_parser = parse_duration)]
    pub jwks_min_refetch: Duration,
    /// Required `iss` claim, when set.
    #[arg(long, env = "TELEMENTAL_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "TELEMENTAL_JWT_AUDIENCE", default_value = "telemental")]
    pub jwt_audience: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "TELEMENTAL_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(
        long,
        env = "TELEMENTAL_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Allow webhook URLs on loopback, private and link-local addresses.
    #[arg(long, env = "TELEMENTAL_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
    /// First retry delay of a failed webhook delivery; doubles after each failure, capped at 1 h.
    #[arg(long, env = "TELEMENTAL_WEBHOOK_RETRY_BASE", default_value = "5s", value_parser = parse_duration)]
    pub webhook_retry_base: Duration,
    /// Attempts before a delivery is dead-lettered (replayable through the API).
    #[arg(long, env = "TELEMENTAL_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub webhook_max_attempts: u32,
    /// Timeout of one webhook POST.
    #[arg(long, env = "TELEMENTAL_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
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
    #[arg(long, env = "TELEMENTAL_REFERRAL_DUE_ROUTINE", default_value = "7d", value_parser = parse_duration)]
    pub referral_due_routine: Duration,
    /// How soon an urgent fallback referral is due.
    #[arg(long, env = "TELEMENTAL_REFERRAL_DUE_URGENT", default_value = "24h", value_parser = parse_duration)]
    pub referral_due_urgent: Duration,
    /// How soon an emergency fallback referral is due.
    #[arg(long, env = "TELEMENTAL_REFERRAL_DUE_EMERGENCY", default_value = "4h", value_parser = parse_duration)]
    pub referral_due_emergency: Duration,
    /// How often the background worker sweeps for overdue referrals, due plan reviews and
    /// deliveries to retry (new events also wake it at once).
    #[arg(long, env = "TELEMENTAL_WORKER_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub worker_interval: Duration,
    /// How long to wait for in-flight requests on shutdown.
    #[arg(long, env = "TELEMENTAL_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
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
            database_url: database_url.to_string(),
            database_max_connections: 5,
            jwt_secret: Some(Secret(secret.to_string())),
            jwks_url: None,
            jwks_min_refetch: Duration::from_secs(10),
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn secrets_do_not_print() {
        let s = parse_secret(&"x".repeat(40)).unwrap();
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(parse_secret("short").is_err());
    }
}
