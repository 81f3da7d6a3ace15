//! telemental: the telemental health guideline as a service.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod outbox;
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

pub use http::openapi;

/// A built, listening service.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    pub store: Store,
    worker: tokio::task::JoinHandle<()>,
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
        let store =
            Store::connect(&settings.database_url, settings.database_max_connections).await?;
        migrate_with_retry(&store, Duration::from_secs(60)).await?;
        let auth = Authenticator::new(settings, dev_secret).map_err(StartupError::msg)?;
        auth.warm_up().await;
        let auth = web::Data::new(auth);
        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        let state = web::Data::new(AppState {
            store: store.clone(),
            referral_due: settings.referral_due(),
            webhook_allow_private: settings.webhook_allow_private,
            outbox_wake: outbox_wake.clone(),
        });
        let api = openapi();
        let known = web::Data::new(Arc::new(KnownPaths::of(&api)));
        let listener = TcpListener::bind(settings.bind)
            .map_err(|e| StartupError::new(format!("cannot listen on {}", settings.bind), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| StartupError::new("cannot read the listening address", e))?
            .port();
        // Install the metrics recorder before the first request.
        http::observe::prometheus();
        let server = HttpServer::new(move || {
            use utoipa_actix_web::AppExt;
            let (app, _) = App::new()
                .into_utoipa_app()
                .configure(http::routes)
                .split_for_parts();
            app.app_data(state.clone())
                .app_data(auth.clone())
                .app_data(known.clone())
                .app_data(web::PathConfig::default().error_handler(http::path_error))
                .app_data(web::QueryConfig::default().error_handler(http::query_error))
                .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", api.clone()))
                .route(
                    "/docs",
                    web::get().to(|| async {
                        actix_web::HttpResponse::PermanentRedirect()
                            .insert_header(("Location", "/docs/"))
                            .finish()
                    }),
                )
                .default_service(web::to(http::fallback))
                // Inside `observe`, which sets the request id this one logs 500s with.
                .wrap(from_fn(error::log_server_errors))
                .wrap(from_fn(http::observe::observe))
        })
        .listen(listener)
        .map_err(|e| StartupError::new("cannot serve on the listener", e))?
        .shutdown_timeout(settings.shutdown_timeout.as_secs().max(1));
        let server = if handle_signals {
            server.run()
        } else {
            server.disable_signals().run()
        };
        let (stop_worker, stop_rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(
            outbox::worker::Worker::new(store.clone(), settings, outbox_wake).run(stop_rx),
        );
        Ok(Application {
            port,
            server,
            store,
            worker,
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
        self.store.close().await;
        r
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }
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
