use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use telemental::auth::{random_secret, Authenticator, Scope};
use telemental::config::{Cli, Command, LogFormat, Settings};
use telemental::error::error_chain;
use telemental::store::Store;
use telemental::Application;

fn init_tracing(settings: &Settings) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log)
        .map_err(|e| format!("TELEMENTAL_LOG (--log): {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file, pipe or journal.
        .with_ansi(std::io::stderr().is_terminal());
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("telemental: {msg}");
    ExitCode::from(2)
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = match Cli::parse_or_explain() {
        Ok(cli) => cli,
        Err(message) => return fail(message),
    };
    let settings = cli.settings;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            match serde_json::to_string_pretty(&telemental::openapi()) {
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
                .filter(|s| !Scope::ALL.iter().any(|k| k.as_str() == *s))
                .collect();
            if !unknown.is_empty() {
                return fail(format!("unknown scope(s): {}", unknown.join(" ")));
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
        Command::Migrate => {
            if let Err(e) = init_tracing(&settings) {
                return fail(e);
            }
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
            if let Err(e) = init_tracing(&settings) {
                return fail(e);
            }
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
