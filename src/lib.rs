//! telemental: the telemental health guideline as a service.

pub mod auth;
pub mod cds;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod events;
pub mod fhir;
pub mod http;
pub mod jwt_crypto;
pub mod outbox;
pub mod p384_verify;
pub mod sig_pool;
pub mod store;

use crate::auth::Authenticator;
use crate::config::Settings;
use crate::error::StartupError;
use crate::http::{AppState, KnownPaths};
use crate::store::Store;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use utoipa_swagger_ui::SwaggerUi;

pub use http::{openapi, openapi_json};

/// A built, listening service.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    pub store: Store,
    worker: tokio::task::JoinHandle<()>,
    sealer: tokio::task::JoinHandle<()>,
    checkpointer: tokio::task::JoinHandle<()>,
    stop_worker: tokio::sync::watch::Sender<bool>,
}

impl Application {
    /// Connects the database, applies migrations, binds the listener (port 0 picks a free one)
    /// and prepares the server. `dev_secret` is the random secret of dev mode.
    pub async fn build(
        settings: &Settings,
        dev_secret: Option<&str>,
        handle_signals: bool,
    ) -> Result<Application, StartupError> {
        settings.check().map_err(StartupError::msg)?;
        let keys = settings.keyring().map_err(StartupError::msg)?;
        let store =
            Store::connect_for_service(&settings.database_url, settings.database_max_connections)
                .await?
                .with_keys(keys);
        migrate_with_retry(&store, Duration::from_secs(60)).await?;
        // A database that answers but cannot be written would answer 503 to every write:
        // refuse to start on one that is read-only from the start (SQLite `mode=ro`, a
        // read-only file). A PostgreSQL that is merely unreachable passed the migrations' wait.
        if let Err(e) = store.check_writable().await {
            return Err(StartupError::msg(format!(
                "the database cannot be written ({e}); check TELEMENTAL_DATABASE_URL, the file's \
                 permissions, the disk, or that PostgreSQL is not read-only"
            )));
        }
        // The current key's canary, which /readyz opens.
        if let Err(e) = store.ensure_canary().await {
            return Err(StartupError::msg(format!(
                "cannot write the encryption canary: {e}"
            )));
        }
        // One service process per SQLite file (it caches what it wrote).
        let store = store.owned().map_err(StartupError::msg)?;
        let auth = Authenticator::new(settings, dev_secret).map_err(StartupError::msg)?;
        auth.warm_up().await;
        let auth = web::Data::new(auth);
        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        // Group commit of audit rows (reads, denials, EHR calls), CDS token ids and, on
        // SQLite, record changes.
        let store = store
            .with_writer()
            .map_err(|e| StartupError::new("cannot start the writer's thread", e))?;
        let Some(writer) = store.writer().cloned() else {
            return Err(StartupError::msg("the writer did not start"));
        };
        let state = web::Data::new(AppState {
            store: store.clone(),
            writer: writer.clone(),
            referral_due: settings.referral_due(),
            webhook_allow_private: settings.webhook_allow_private,
            webhooks_per_tenant: settings.webhooks_per_tenant,
            outbox_wake: outbox_wake.clone(),
            report_suppression: settings.report_suppression,
        });
        let body_timeout = web::Data::new(http::extract::BodyTimeout(settings.body_timeout));
        let api = openapi();
        let known = web::Data::new(Arc::new(KnownPaths::of(&api)));
        let cds_settings = web::Data::new(cds::CdsSettings::new(settings));
        let interop_writer = web::Data::new(writer);
        let fhir_settings = web::Data::new(fhir::FhirSettings {
            public_url: settings.public_url.clone(),
            allowed_origins: settings.fhir_allowed_origins.0.clone(),
        });
        let doc = http::openapi_json();
        let listener = TcpListener::bind(settings.bind)
            .map_err(|e| StartupError::new(format!("cannot listen on {}", settings.bind), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| StartupError::new("cannot read the listening address", e))?
            .port();
        // Install the metrics recorder before the first request.
        http::observe::prometheus();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let server = HttpServer::new(move || {
            use utoipa_actix_web::AppExt;
            let (app, _) = App::new()
                .into_utoipa_app()
                .configure(http::routes)
                .split_for_parts();
            app.app_data(state.clone())
                .app_data(body_timeout.clone())
                .app_data(auth.clone())
                .app_data(known.clone())
                .app_data(fhir_settings.clone())
                .app_data(cds_settings.clone())
                .app_data(interop_writer.clone())
                .app_data(web::PathConfig::default().error_handler(http::path_error))
                .app_data(web::QueryConfig::default().error_handler(http::query_error))
                .service(
                    SwaggerUi::new("/docs/{_:.*}")
                        .external_url_unchecked("/openapi.json", doc.clone()),
                )
                .route(
                    "/docs",
                    web::get().to(|| async {
                        actix_web::HttpResponse::PermanentRedirect()
                            .insert_header(("Location", "/docs/"))
                            .finish()
                    }),
                )
                .configure(http::dashboard::configure)
                .default_service(web::to(http::fallback))
                // Inside `observe`, which sets the request id this one logs 500s with.
                .wrap(from_fn(error::log_server_errors))
                .wrap(from_fn(http::observe::observe))
        })
        .workers(workers)
        // Slow clients: headers must arrive within the header timeout (else 408 and close);
        // bodies are bounded by the body timeout in the JSON extractor.
        .client_request_timeout(settings.header_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        // actix counts connections per worker: split the total between them.
        .max_connections(per_worker_connections(settings.max_connections, workers))
        .listen(listener)
        .map_err(|e| StartupError::new("cannot serve on the listener", e))?
        .shutdown_timeout(settings.shutdown_timeout.as_secs().max(1));
        let server = if handle_signals {
            server.run()
        } else {
            server.disable_signals().run()
        };
        let (stop_worker, stop_rx) = tokio::sync::watch::channel(false);
        let sealer = tokio::spawn(seal_audit_trail(
            store.clone(),
            settings.worker_interval,
            stop_rx.clone(),
        ));
        let checkpointer = tokio::spawn(checkpoint_log(store.clone(), stop_rx.clone()));
        let worker = tokio::spawn(
            outbox::worker::Worker::new(store.clone(), settings, outbox_wake).run(stop_rx),
        );
        Ok(Application {
            port,
            server,
            store,
            worker,
            sealer,
            checkpointer,
            stop_worker,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM/SIGINT (graceful: in-flight requests finish) or the handle stops it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let r = self.server.await;
        // After the last request: the worker finishes its round (an unfinished delivery's
        // lease expires and it is sent again later), then the pool closes.
        let _ = self.stop_worker.send(true);
        let _ = self.worker.await;
        let _ = self.sealer.await;
        let _ = self.checkpointer.await;
        self.store.close().await;
        r
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }
}

/// Links new unsealed audit rows into their tenants' hash chains every `interval` (see
/// migration 0011), until stopped. Those are the rows of record changes, written in each
/// change's own transaction; the group-commit writer links its rows as it inserts them
/// (migration 0060).
async fn seal_audit_trail(
    store: Store,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match store.seal_audit(1000).await {
            // A full batch: go on at once.
            Ok(n) if n >= 1000 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not seal the audit trail; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {
                // Seal what the last requests wrote, then stop.
                let _ = store.seal_audit(1000).await;
                return;
            }
        }
    }
}

/// Checkpoints the SQLite log every 200 ms, beside the writers rather than inside a commit
/// (see `Store::connect_for_service`), until stopped. Nothing on PostgreSQL.
async fn checkpoint_log(store: Store, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        match store.checkpoint().await {
            Ok(Some(c)) => metrics::gauge!("telemental_sqlite_log_pages").set(c.log as f64),
            Ok(None) => return,
            Err(e) => tracing::warn!(error = %e, "could not checkpoint the SQLite log; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// actix's connection cap is per worker: the total divided between the workers (at least one
/// each, so the total is exact when it is a multiple of the worker count).
fn per_worker_connections(total: u32, workers: usize) -> usize {
    (total as usize / workers.max(1)).max(1)
}

/// Applies migrations, waiting for a database that is still starting (PostgreSQL in compose).
pub async fn migrate_with_retry(store: &Store, patience: Duration) -> Result<(), StartupError> {
    let started = std::time::Instant::now();
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() < patience => {
                tracing::warn!(error = %error::error_chain(&e), "database not ready; retrying migrations");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
