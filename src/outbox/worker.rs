//! The background worker: sweeps for overdue referrals and due plan reviews, prunes the outbox
//! past its retention, keeps the metrics recorder drained, and delivers webhook events from the outbox — at least once, signed,
//! retried with backoff.
//!
//! Every instance (process) runs one worker with a fresh instance id. A delivery is leased to
//! that id for [`LEASE`] and a heartbeat renews the leases of the deliveries in flight every
//! [`RENEW_EVERY`], so a killed process's deliveries are taken over within one lease, not
//! after the webhook timeout. A POST whose lease could not be renewed in time is abandoned
//! before the lease runs out, so two live instances never send one delivery at the same time
//! (given instance clocks within [`LEASE_MARGIN`] of each other). Each instance has
//! `TELEMENTAL_WEBHOOK_IN_FLIGHT` slots, of which one webhook may hold at most
//! `TELEMENTAL_WEBHOOK_IN_FLIGHT_PER_WEBHOOK`.

use super::guard::{check_webhook_url, retry_delay, signature_header, webhook_client};
use crate::config::Settings;
use crate::store::outbox::{AttemptResult, ClaimLimits, DeliveryJob};
use crate::store::{Store, Ts};
use chrono::Utc;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// How long a claimed delivery stays leased without a renewal.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often the leases of deliveries in flight are renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// A POST is abandoned this long before its lease would run out unrenewed.
pub const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// How often idempotency keys older than 48 h are forgotten.
const KEY_SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How often the metrics recorder folds recorded latencies into its histograms. Without it
/// every sample is kept until `/metrics` is scraped: memory grows with traffic when nobody
/// scrapes (a soak test found it).
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// Rows of each kind removed per pruning batch, and batches per pruning run, so pruning a
/// large backlog never holds a lock for long or starves deliveries.
const PRUNE_BATCH: i64 = 500;
const PRUNE_BATCHES_PER_RUN: usize = 20;

/// What one heartbeat renewed: the leases still held, from `started` on.
#[derive(Clone)]
struct Renewal {
    started: Instant,
    held: Arc<HashSet<Uuid>>,
}

pub struct Worker {
    store: Store,
    client: reqwest::Client,
    allow_private: bool,
    retry_base: Duration,
    max_attempts: u32,
    interval: Duration,
    instance: Uuid,
    /// New events were committed (handlers) or the sweeper emitted some.
    wake: Arc<Notify>,
    /// A delivery finished, so its slot (and its webhook's room) is free again.
    slot_freed: Notify,
    slots: Arc<tokio::sync::Semaphore>,
    total_slots: usize,
    per_webhook: usize,
    /// Deliveries in flight in this instance, with their webhooks.
    in_flight: Mutex<HashMap<Uuid, Uuid>>,
    renewals: watch::Sender<Renewal>,
    retention: Duration,
    prune_every: Duration,
}

impl Worker {
    pub fn new(store: Store, settings: &Settings, wake: Arc<Notify>) -> Worker {
        let total_slots = settings.webhook_in_flight as usize;
        let (renewals, _) = watch::channel(Renewal {
            started: Instant::now(),
            held: Arc::default(),
        });
        Worker {
            store,
            client: webhook_client(settings.webhook_allow_private, settings.webhook_timeout),
            allow_private: settings.webhook_allow_private,
            retry_base: settings.webhook_retry_base,
            max_attempts: settings.webhook_max_attempts,
            interval: settings.worker_interval,
            instance: Uuid::now_v7(),
            wake,
            slot_freed: Notify::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(total_slots)),
            total_slots,
            per_webhook: (settings.webhook_in_flight_per_webhook as usize).clamp(1, total_slots),
            in_flight: Mutex::default(),
            renewals,
            retention: settings.outbox_retention,
            // Often enough that rows do not outstay the retention by much, rarely enough to cost
            // nothing.
            // (`max` then `min`, not `clamp`: an interval above ten minutes is a valid setting.)
            prune_every: (settings.outbox_retention / 10)
                .min(Duration::from_secs(600))
                .max(settings.worker_interval),
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        tracing::info!(instance = %this.instance, "outbox worker started");
        let (stop_heartbeat, heartbeat_stopped) = watch::channel(false);
        let heartbeat = tokio::spawn(this.clone().heartbeat(heartbeat_stopped));
        let mut chores = Chores::default();
        let mut woken_by = Wake::Timer;
        loop {
            if let Err(e) = this.round(&mut chores, woken_by).await {
                tracing::warn!(error = %e, "outbox round failed; will retry");
            }
            woken_by = tokio::select! {
                _ = this.wake.notified() => Wake::Event,
                _ = this.slot_freed.notified() => Wake::Slot,
                _ = tokio::time::sleep(this.interval) => Wake::Timer,
                _ = stop.changed() => Wake::Timer,
            };
            if *stop.borrow() {
                break;
            }
        }
        // Let deliveries in flight finish (bounded by the webhook timeout), their leases still
        // renewed meanwhile.
        let _ = this.slots.acquire_many(this.total_slots as u32).await;
        let _ = stop_heartbeat.send(true);
        let _ = heartbeat.await;
    }

    /// Renews the leases of the deliveries in flight until `stop` turns true.
    async fn heartbeat(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            // `started` is taken before the snapshot: a delivery registered before `started`
            // is in it, and the deadline derived from `started` is never later than the lease.
            let started = Instant::now();
            let ids: Vec<Uuid> = self.in_flight().keys().copied().collect();
            if ids.is_empty() {
                continue;
            }
            let until = lease_until(Utc::now());
            match self.store.renew_leases(self.instance, &ids, until).await {
                Ok(held) => {
                    self.renewals.send_replace(Renewal {
                        started,
                        held: Arc::new(held.into_iter().collect()),
                    });
                }
                Err(e) => tracing::warn!(
                    error = %e, in_flight = ids.len(),
                    "could not renew delivery leases; deliveries in flight stop before their leases run out"
                ),
            }
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Uuid>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the chores that are due, then claims deliveries for the free slots.
    async fn round(
        self: &Arc<Self>,
        chores: &mut Chores,
        woken_by: Wake,
    ) -> Result<(), crate::store::DbError> {
        let now = Ts::now();
        if due(&chores.metrics_upkeep, METRICS_UPKEEP_EVERY) {
            crate::http::observe::prometheus().run_upkeep();
            chores.metrics_upkeep = Some(Instant::now());
        }
        // The sweeps depend on the time only, so once per interval is enough; a round woken by a
        // new event goes straight to claiming (each sweep is a write transaction, and on SQLite
        // writes queue for one lock).
        if due(&chores.sweep, self.interval) {
            // The referral as every referral event and the API show it.
            let overdue = self
                .store
                .sweep_overdue_referrals(now, |r| {
                    serde_json::to_value(crate::http::referrals::view(r, now.0)).unwrap_or_default()
                })
                .await?;
            let reviews = self
                .store
                .sweep_plan_reviews(now.0.date_naive(), now)
                .await?;
            if overdue + reviews > 0 {
                tracing::info!(overdue, reviews, "events emitted by the sweeper");
            }
            chores.sweep = Some(Instant::now());
        }
        if due(&chores.key_sweep, KEY_SWEEP_EVERY) {
            self.store
                .sweep_idempotency_keys(Ts::from(now.0 - chrono::Duration::hours(48)))
                .await?;
            chores.key_sweep = Some(Instant::now());
        }
        if due(&chores.prune, self.prune_every) {
            self.prune(now).await?;
            chores.prune = Some(Instant::now());
        }
        let free = self.slots.available_permits();
        if free == 0 {
            return Ok(()); // a finishing delivery wakes the worker
        }
        // While every webhook with due deliveries is at its cap, a claim walks all their due
        // deliveries to find none; new events then wait for the timer (or a freed slot) instead
        // of repeating that walk for each event.
        if woken_by == Wake::Event
            && chores
                .futile_claim
                .is_some_and(|t| t.elapsed() < self.interval)
        {
            return Ok(());
        }
        {
            let busy: Vec<(Uuid, usize)> = {
                let mut counts: HashMap<Uuid, usize> = HashMap::new();
                for webhook in self.in_flight().values() {
                    *counts.entry(*webhook).or_default() += 1;
                }
                counts.into_iter().collect()
            };
            let some_full = busy.iter().any(|(_, n)| *n >= self.per_webhook);
            let claimed_at = Instant::now();
            let now = Utc::now();
            let jobs = self
                .store
                .claim_deliveries(
                    self.instance,
                    Ts::from(now),
                    lease_until(now),
                    &ClaimLimits {
                        free,
                        per_webhook: self.per_webhook,
                        busy: &busy,
                    },
                )
                .await?;
            chores.futile_claim = (jobs.is_empty() && some_full).then(Instant::now);
            for job in jobs {
                let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                    break; // cannot happen: we claimed no more than the free slots
                };
                let since = Instant::now();
                self.in_flight().insert(job.id, job.webhook_id);
                let worker = self.clone();
                tokio::spawn(async move {
                    let id = job.id;
                    worker.deliver(job, claimed_at, since).await;
                    worker.in_flight().remove(&id);
                    drop(permit);
                    worker.slot_freed.notify_one();
                });
            }
        }
        Ok(())
    }

    /// Prunes the outbox in bounded batches until nothing is left or the run's budget is spent.
    async fn prune(&self, now: Ts) -> Result<(), crate::store::DbError> {
        let retention = chrono::Duration::from_std(self.retention)
            .unwrap_or_else(|_| chrono::Duration::days(36_500));
        let cutoff = Ts::from(now.0 - retention);
        let (mut deliveries, mut events, mut attempts) = (0, 0, 0);
        for _ in 0..PRUNE_BATCHES_PER_RUN {
            let p = self.store.prune_outbox(cutoff, PRUNE_BATCH).await?;
            deliveries += p.deliveries;
            events += p.events;
            attempts += p.attempts;
            let full = PRUNE_BATCH as u64;
            if p.deliveries < full && p.events < full {
                break;
            }
        }
        if deliveries + events > 0 {
            tracing::info!(
                deliveries,
                events,
                attempts,
                "outbox pruned past its retention"
            );
        }
        Ok(())
    }

    async fn deliver(&self, job: DeliveryJob, claimed_at: Instant, since: Instant) {
        if job.webhook_deleted {
            if let Err(e) = self.store.cancel_delivery(self.instance, job.id).await {
                tracing::warn!(error = %e, "could not cancel a delivery");
            }
            return;
        }
        let started = Instant::now();
        let Some(result) = self.attempt_while_leased(&job, claimed_at, since).await else {
            tracing::warn!(
                delivery = %job.id, event = %job.event_type,
                "delivery lease not renewed in time; attempt abandoned, it will be sent again"
            );
            return;
        };
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
        match self
            .store
            .finish_attempt(self.instance, &job, &result, at, ms)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                delivery = %job.id,
                "delivery no longer leased to this instance when its attempt finished"
            ),
            // The lease expires and the delivery is tried again: at least once.
            Err(e) => {
                tracing::warn!(error = %e, delivery = %job.id, "could not record a delivery attempt")
            }
        }
    }

    /// Runs the attempt while this instance holds the lease; `None` when the lease could not be
    /// renewed in time (the POST is dropped, closing its connection, before the lease runs out).
    async fn attempt_while_leased(
        &self,
        job: &DeliveryJob,
        claimed_at: Instant,
        since: Instant,
    ) -> Option<AttemptResult> {
        let mut renewals = self.renewals.subscribe();
        let mut deadline = claimed_at + LEASE - LEASE_MARGIN;
        let attempt = self.attempt(job);
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                result = &mut attempt => return Some(result),
                _ = tokio::time::sleep_until(deadline.into()) => return None,
                changed = renewals.changed() => {
                    if changed.is_err() {
                        // No more renewals (cannot happen while the worker lives): finish within
                        // the lease we have.
                        return tokio::select! {
                            result = &mut attempt => Some(result),
                            _ = tokio::time::sleep_until(deadline.into()) => None,
                        };
                    }
                    let r = renewals.borrow_and_update().clone();
                    if r.started >= deadline {
                        return None; // renewed too late to vouch for the time in between
                    }
                    if r.held.contains(&job.id) {
                        deadline = deadline.max(r.started + LEASE - LEASE_MARGIN);
                    } else if r.started > since {
                        return None; // it should have been renewed and was not: taken over
                    }
                }
            }
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

/// What woke the worker.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wake {
    Event,
    Slot,
    Timer,
}

/// When each periodic chore last ran (`None`: not yet), and when a claim last found nothing
/// because every webhook with due deliveries was at its cap.
#[derive(Default)]
struct Chores {
    sweep: Option<Instant>,
    key_sweep: Option<Instant>,
    prune: Option<Instant>,
    metrics_upkeep: Option<Instant>,
    futile_claim: Option<Instant>,
}

fn due(last: &Option<Instant>, every: Duration) -> bool {
    last.is_none_or(|t| t.elapsed() >= every)
}

fn lease_until(now: chrono::DateTime<Utc>) -> Ts {
    Ts::from(now + chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::seconds(10)))
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
