//! The background worker: sweeps for overdue referrals and due plan reviews, and delivers
//! webhook events from the outbox — at least once, signed, retried with backoff. Every
//! instance runs one; leases (and `SKIP LOCKED` on PostgreSQL) keep them from sending the same
//! delivery twice at once, and a lease left by a killed instance simply expires.

use super::guard::{check_webhook_url, retry_delay, signature_header, webhook_client};
use crate::config::Settings;
use crate::store::outbox::{AttemptResult, DeliveryJob};
use crate::store::{Store, Ts};
use chrono::Utc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// Deliveries in flight at once per instance. Slots are claimed as they free up, so one slow
/// receiver holds one slot, not the whole queue.
const IN_FLIGHT: usize = 32;
/// How often idempotency keys older than 48 h are forgotten.
const KEY_SWEEP_EVERY: Duration = Duration::from_secs(600);

pub struct Worker {
    store: Store,
    client: reqwest::Client,
    allow_private: bool,
    retry_base: Duration,
    max_attempts: u32,
    interval: Duration,
    lease: Duration,
    wake: Arc<Notify>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Worker {
    pub fn new(store: Store, settings: &Settings, wake: Arc<Notify>) -> Worker {
        Worker {
            store,
            client: webhook_client(settings.webhook_allow_private, settings.webhook_timeout),
            allow_private: settings.webhook_allow_private,
            retry_base: settings.webhook_retry_base,
            max_attempts: settings.webhook_max_attempts,
            interval: settings.worker_interval,
            lease: settings.webhook_timeout + Duration::from_secs(30),
            wake,
            slots: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let mut last_key_sweep: Option<Instant> = None;
        loop {
            if let Err(e) = this.round(&mut last_key_sweep).await {
                tracing::warn!(error = %e, "outbox round failed; will retry");
            }
            tokio::select! {
                _ = this.wake.notified() => {}
                _ = tokio::time::sleep(this.interval) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
        // Let deliveries in flight finish (bounded by the webhook timeout).
        let _ = this.slots.acquire_many(IN_FLIGHT as u32).await;
    }

    async fn round(
        self: &Arc<Self>,
        last_key_sweep: &mut Option<Instant>,
    ) -> Result<(), crate::store::DbError> {
        let now = Ts::now();
        let overdue = self.store.sweep_overdue_referrals(now).await?;
        let reviews = self
            .store
            .sweep_plan_reviews(now.0.date_naive(), now)
            .await?;
        if overdue + reviews > 0 {
            tracing::info!(overdue, reviews, "events emitted by the sweeper");
        }
        if last_key_sweep.is_none_or(|t| t.elapsed() > KEY_SWEEP_EVERY) {
            self.store
                .sweep_idempotency_keys(Ts::from(now.0 - chrono::Duration::hours(48)))
                .await?;
            *last_key_sweep = Some(Instant::now());
        }
        loop {
            let free = self.slots.available_permits();
            if free == 0 {
                return Ok(()); // a finishing delivery wakes the worker
            }
            let now = Ts::now();
            let lease =
                chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::minutes(1));
            let jobs = self
                .store
                .claim_deliveries(now, Ts::from(now.0 + lease), free as i64)
                .await?;
            let claimed = jobs.len();
            for job in jobs {
                let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                    break; // cannot happen: we claimed no more than the free slots
                };
                let worker = self.clone();
                tokio::spawn(async move {
                    worker.deliver(job).await;
                    drop(permit);
                    worker.wake.notify_one();
                });
            }
            if claimed < free {
                return Ok(());
            }
        }
    }

    async fn deliver(&self, job: DeliveryJob) {
        if job.webhook_deleted {
            if let Err(e) = self.store.cancel_delivery(job.id).await {
                tracing::warn!(error = %e, "could not cancel a delivery");
            }
            return;
        }
        let started = Instant::now();
        let result = self.attempt(&job).await;
        let at = Ts::now();
        let ms = started.elapsed().as_millis() as i64;
        match &result {
            AttemptResult::Delivered { status } => {
                tracing::info!(delivery = %job.id, event = %job.event_type, status, ms, "webhook delivered")
            }
            AttemptResult::Failed {
                status, retry_at, ..
            } => tracing::warn!(
                delivery = %job.id, event = %job.event_type, status = status.unwrap_or(0),
                attempt = job.attempts + 1, dead = retry_at.is_none(), "webhook delivery failed"
            ),
        }
        if let Err(e) = self.store.finish_attempt(&job, &result, at, ms).await {
            // The lease expires and the delivery is tried again: at least once.
            tracing::warn!(error = %e, delivery = %job.id, "could not record a delivery attempt");
        }
    }

    async fn attempt(&self, job: &DeliveryJob) -> AttemptResult {
        let failed_attempts = job.attempts.max(0) as u32 + 1;
        let retry_at = || {
            (failed_attempts < self.max_attempts).then(|| {
                let d = retry_delay(self.retry_base, failed_attempts);
                Ts::from(
                    Utc::now()
                        + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(1)),
                )
            })
        };
        // IP literals bypass the resolver's check, so the URL is checked again here.
        if let Err(e) = check_webhook_url(&job.url, self.allow_private) {
            return AttemptResult::Failed {
                status: None,
                error: e,
                retry_at: None,
            };
        }
        let body = serde_json::json!({
            "id": job.event_id,
            "type": job.event_type,
            "occurred_at": job.occurred_at.0,
            "data": job.payload.0,
        });
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let signature = signature_header(&job.secret, Utc::now().timestamp(), &body);
        let sent = self
            .client
            .post(&job.url)
            .header("content-type", "application/json")
            .header("Telemental-Event-Id", job.event_id.to_string())
            .header("Telemental-Delivery-Id", job.id.to_string())
            .header("Telemental-Signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => AttemptResult::Delivered {
                status: r.status().as_u16(),
            },
            Ok(r) => AttemptResult::Failed {
                status: Some(r.status().as_u16()),
                error: format!("receiver answered {}", r.status()),
                retry_at: retry_at(),
            },
            Err(e) => AttemptResult::Failed {
                status: None,
                error: describe(&e),
                retry_at: retry_at(),
            },
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut s = kind.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s = format!("{s}: {inner}");
        src = inner.source();
    }
    s.chars().take(500).collect()
}
