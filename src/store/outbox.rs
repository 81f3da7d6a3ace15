//! The transactional outbox: events are written with the change that caused them and fanned
//! out to subscribed webhooks in the same transaction; workers claim deliveries with a lease.

use super::audit::insert_audit;
use super::{on_db, AuditEntry, Db, DbResult, Store, Ts};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

/// Writes an event and one pending delivery per subscribed webhook, inside an open
/// transaction (`$tx` is the transaction binding). The payload is sealed whole, bound to the
/// event's id (`$store` has the keys). Evaluates to a `Result<Uuid, DbError>` holding the
/// event's id: the caller decides what a failure does (`emit_event!(...)?`).
macro_rules! emit_event {
    ($store:expr, $tx:expr, $tenant:expr, $type:expr, $payload:expr, $at:expr) => {{
        let conn = &mut *$tx;
        let store: &$crate::store::Store = $store;
        let tenant: &str = $tenant;
        let kind: &str = $crate::events::WebhookEvent::as_str($type);
        let at: $crate::store::Ts = $at;
        let payload = serde_json::to_value($payload).unwrap_or_default();
        async move {
            let event_id = uuid::Uuid::now_v7();
            let event_row = event_id.to_string();
            let sealed = store
                .place(tenant, "outbox_events.payload", &event_row)
                .seal_value(&payload)?;
            let hooks: Vec<(uuid::Uuid,)> = sqlx::query_as(
                "SELECT id FROM webhooks WHERE tenant = $1 AND deleted_at IS NULL AND events LIKE $2",
            )
            .bind(tenant)
            .bind(format!("%,{kind},%"))
            .fetch_all(&mut *conn)
            .await?;
            sqlx::query("INSERT INTO outbox_events (id, tenant, type, occurred_at, payload) VALUES ($1, $2, $3, $4, $5)")
                .bind(event_id)
                .bind(tenant)
                .bind(kind)
                .bind(at)
                .bind(sqlx::types::Json(&sealed))
                .execute(&mut *conn)
                .await?;
            for (hook,) in hooks {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, tenant, webhook_id, event_id, status, attempts, \
                     next_attempt_at, created_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)",
                )
                .bind(uuid::Uuid::now_v7())
                .bind(tenant)
                .bind(hook)
                .bind(event_id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            Ok::<uuid::Uuid, $crate::store::DbError>(event_id)
        }
        .await
    }};
}
pub(crate) use emit_event;

/// Marks plans whose review date ($1 is today) has been reached as announced. The condition is
/// the one of the partial index `plans_review_unnotified`: only plans whose current review date
/// has not fired are read, so the scan does not grow as plans pass their review dates.
pub const REVIEW_SWEEP: &str = "UPDATE plans SET review_notified_for = review_due \
    WHERE (review_notified_for IS NULL OR review_notified_for <> review_due) AND review_due <= $1 \
    RETURNING id, tenant, subject, version, review_due";

/// Everything a worker needs to send one delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryJob {
    pub id: Uuid,
    pub tenant: String,
    pub webhook_id: Uuid,
    pub attempts: i32,
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: Ts,
    pub payload: Json<Value>,
    pub url: String,
    pub secret: String,
    pub webhook_deleted: bool,
}

/// A webhook to register.
pub struct NewWebhook<'a> {
    pub id: Uuid,
    pub tenant: &'a str,
    pub url: &'a str,
    /// `,a,b,`: the sorted event names, for LIKE matching and duplicate detection.
    pub events: &'a str,
    pub secret: &'a str,
    pub description: Option<&'a str>,
    pub at: Ts,
}

/// How a registration went.
pub enum InsertWebhook {
    Created,
    /// The tenant already has a webhook with this URL and these events.
    Duplicate(Uuid),
    /// The tenant has as many webhooks as allowed.
    TooMany,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: Uuid,
    pub url: String,
    pub events: String,
    pub description: Option<String>,
    pub created_at: Ts,
    pub created_by: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Ts,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: Ts,
    pub delivered_at: Option<Ts>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub delivery_id: Uuid,
    pub at: Ts,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// How one attempt went.
pub enum AttemptResult {
    Delivered {
        status: u16,
    },
    Failed {
        status: Option<u16>,
        error: String,
        retry_at: Option<Ts>,
    },
}

/// How much a worker instance may claim: its free slots, and how many more deliveries each
/// webhook may have in flight (`busy` lists the webhooks it already has some in flight for).
pub struct ClaimLimits<'a> {
    pub free: usize,
    pub per_webhook: usize,
    pub busy: &'a [(Uuid, usize)],
}

/// Rows removed by one pruning batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub events: u64,
    pub attempts: u64,
}

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Leases due deliveries to `owner` until `lease_until` (other instances skip them until
    /// then): at most `limits.free`, and per webhook no more than its room under
    /// `limits.per_webhook`, so one hung receiver cannot take every slot.
    pub async fn claim_deliveries(
        &self,
        owner: Uuid,
        now: Ts,
        lease_until: Ts,
        limits: &ClaimLimits<'_>,
    ) -> DbResult<Vec<DeliveryJob>> {
        if limits.free == 0 {
            return Ok(Vec::new());
        }
        let per_webhook = limits.per_webhook as i64;
        let full: Vec<Uuid> = limits
            .busy
            .iter()
            .filter(|(_, n)| *n >= limits.per_webhook)
            .map(|(w, _)| *w)
            .collect();
        let partial: Vec<(Uuid, i64)> = limits
            .busy
            .iter()
            .filter(|(_, n)| *n < limits.per_webhook)
            .map(|(w, n)| (*w, per_webhook - *n as i64))
            .collect();
        // $1 lease, $2 now, $3 limit, $4 owner, $5 rows to look at, $6 room of an idle webhook.
        let mut sql = String::from(
            "WITH candidates AS (SELECT id, webhook_id, next_attempt_at FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $2 \
             AND (locked_until IS NULL OR locked_until < $2)",
        );
        let mut next = 7;
        if !full.is_empty() {
            // Webhooks at their cap are not even looked at, so their backlog cannot crowd out
            // the others' deliveries.
            sql += &format!(
                " AND webhook_id NOT IN ({})",
                placeholders(next, full.len())
            );
            next += full.len();
        }
        sql += " ORDER BY next_attempt_at LIMIT $5";
        if matches!(self.db, Db::Postgres(_)) {
            // Concurrent instances take disjoint batches instead of waiting for each other.
            sql += " FOR UPDATE SKIP LOCKED";
        }
        sql += "), ranked AS (SELECT id, next_attempt_at, \
            ROW_NUMBER() OVER (PARTITION BY webhook_id ORDER BY next_attempt_at, id) AS n, ";
        if partial.is_empty() {
            sql += "$6";
        } else {
            sql += "CASE webhook_id";
            for _ in &partial {
                sql += &format!(" WHEN ${} THEN ${}", next, next + 1);
                next += 2;
            }
            sql += " ELSE $6 END";
        }
        sql += " AS room FROM candidates) \
            UPDATE webhook_deliveries SET locked_until = $1, locked_by = $4 \
            WHERE id IN (SELECT id FROM ranked WHERE n <= room ORDER BY next_attempt_at LIMIT $3) \
            RETURNING id";
        let scan = (limits.free as i64 * 4).max(64);
        const JOB: &str = "SELECT d.id, d.tenant, d.webhook_id, d.attempts, e.id AS event_id, \
            e.type AS event_type, e.occurred_at, e.payload, w.url, w.secret, \
            (w.deleted_at IS NOT NULL) AS webhook_deleted \
            FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id \
            JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1";
        let _turn = self.write_turn().await;
        let jobs = on_db!(&self.db, p => {
            let mut q = sqlx::query_as::<_, (Uuid,)>(&sql)
                .bind(lease_until)
                .bind(now)
                .bind(limits.free as i64)
                .bind(owner)
                .bind(scan)
                .bind(per_webhook);
            for w in &full {
                q = q.bind(*w);
            }
            for (w, room) in &partial {
                q = q.bind(*w).bind(*room);
            }
            let ids = q.fetch_all(p).await?;
            let mut jobs = Vec::with_capacity(ids.len());
            for (id,) in ids {
                if let Some(job) = sqlx::query_as::<_, DeliveryJob>(JOB).bind(id).fetch_optional(p).await? {
                    // A job that cannot be opened keeps its lease until it runs out and is
                    // tried again (by then the missing key may be configured).
                    match self.open_job(job) {
                        Ok(job) => jobs.push(job),
                        Err(e) => tracing::error!(delivery = %id, key_id = e.key_id(), error = %e,
                            "a webhook delivery cannot be decrypted; it is retried when its lease runs out"),
                    }
                }
            }
            jobs
        });
        Ok(jobs)
    }

    /// The job with its payload and the webhook's secret decrypted (either may be clear,
    /// written before encryption).
    fn open_job(&self, mut job: DeliveryJob) -> Result<DeliveryJob, crate::crypto::CryptoError> {
        let event_row = job.event_id.to_string();
        let payload = std::mem::take(&mut job.payload.0);
        job.payload.0 = self
            .place(&job.tenant, "outbox_events.payload", &event_row)
            .open_value(payload)?;
        let hook_row = job.webhook_id.to_string();
        job.secret = self
            .place(&job.tenant, "webhooks.secret", &hook_row)
            .open_text(&job.secret)?;
        Ok(job)
    }

    /// Extends `owner`'s leases on `ids` to `until`; returns the ids it still holds (a lease
    /// that ran out and was taken over by another instance is not renewed).
    pub async fn renew_leases(&self, owner: Uuid, ids: &[Uuid], until: Ts) -> DbResult<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE webhook_deliveries SET locked_until = $1 WHERE locked_by = $2 \
             AND status = 'pending' AND id IN ({}) RETURNING id",
            placeholders(3, ids.len())
        );
        let _turn = self.write_turn().await;
        let held = on_db!(&self.db, p => {
            let mut q = sqlx::query_as::<_, (Uuid,)>(&sql).bind(until).bind(owner);
            for id in ids {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        });
        Ok(held.into_iter().map(|(id,)| id).collect())
    }

    /// Records an attempt and moves the delivery on (delivered, retry later, or dead), if
    /// `owner` still holds it; false when it no longer did (the attempt is recorded anyway).
    pub async fn finish_attempt(
        &self,
        owner: Uuid,
        job: &DeliveryJob,
        result: &AttemptResult,
        at: Ts,
        duration_ms: i64,
    ) -> DbResult<bool> {
        let (status_code, error) = match result {
            AttemptResult::Delivered { status } => (Some(*status as i32), None),
            AttemptResult::Failed { status, error, .. } => {
                (status.map(|s| s as i32), Some(error.clone()))
            }
        };
        let held = on_db!(&self.db, p => {
            let _turn = self.write_turn().await;
            let mut tx = p.begin().await?;
            let n = match result {
                AttemptResult::Delivered { .. } => {
                    sqlx::query("UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, \
                        delivered_at = $1, last_status = $2, last_error = NULL, locked_until = NULL, locked_by = NULL \
                        WHERE id = $3 AND locked_by = $4 AND status = 'pending'")
                        .bind(at).bind(status_code).bind(job.id).bind(owner).execute(&mut *tx).await?
                }
                AttemptResult::Failed { retry_at, .. } => {
                    let (status, next) = match retry_at {
                        Some(t) => ("pending", *t),
                        None => ("dead", at),
                    };
                    sqlx::query("UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, \
                        next_attempt_at = $2, last_status = $3, last_error = $4, locked_until = NULL, locked_by = NULL \
                        WHERE id = $5 AND locked_by = $6 AND status = 'pending'")
                        .bind(status).bind(next).bind(status_code).bind(&error).bind(job.id).bind(owner)
                        .execute(&mut *tx).await?
                }
            }
            .rows_affected();
            sqlx::query("INSERT INTO webhook_attempts (id, delivery_id, at, status_code, error, duration_ms) \
                VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(Uuid::now_v7()).bind(job.id).bind(at).bind(status_code).bind(&error).bind(duration_ms)
                .execute(&mut *tx).await?;
            tx.commit().await?;
            n > 0
        });
        Ok(held)
    }

    /// A delivery whose webhook was deleted is not sent.
    pub async fn cancel_delivery(&self, owner: Uuid, id: Uuid) -> DbResult<()> {
        let _turn = self.write_turn().await;
        on_db!(&self.db, p => sqlx::query("UPDATE webhook_deliveries SET status = 'cancelled', locked_until = NULL, \
            locked_by = NULL WHERE id = $1 AND locked_by = $2")
            .bind(id).bind(owner).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Removes one bounded batch (`batch` rows of each kind at most) of what has outlived
    /// `cutoff`: deliveries delivered before it, dead letters that died before it (a replay
    /// makes one pending again, so a replayed letter is kept), cancelled deliveries last due
    /// before it, each with its attempts; then events older than it that no delivery needs.
    /// Pending deliveries are never pruned, whatever their age.
    pub async fn prune_outbox(&self, cutoff: Ts, batch: i64) -> DbResult<Pruned> {
        // (condition on the delivery's own columns, the column it is ordered by)
        // One status at a time, so that each batch is a range scan of an index in its order.
        const FINISHED: [(&str, &str); 3] = [
            ("status = 'delivered' AND delivered_at < $1", "delivered_at"),
            (
                "status = 'dead' AND next_attempt_at < $1",
                "next_attempt_at",
            ),
            (
                "status = 'cancelled' AND next_attempt_at < $1",
                "next_attempt_at",
            ),
        ];
        const EVENTS: &str = "DELETE FROM outbox_events WHERE id IN (SELECT e.id FROM outbox_events e \
            WHERE e.occurred_at < $1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id) \
            ORDER BY e.occurred_at LIMIT $2)";
        let mut pruned = Pruned::default();
        for (cond, order) in FINISHED {
            let pick =
                format!("SELECT id FROM webhook_deliveries WHERE {cond} ORDER BY {order} LIMIT $2");
            let attempts = format!("DELETE FROM webhook_attempts WHERE delivery_id IN ({pick})");
            // The condition is repeated on the row itself so that a delivery replayed meanwhile
            // is kept; one whose attempts were not removed (it changed in between) waits for the
            // next batch.
            let deliveries = format!(
                "DELETE FROM webhook_deliveries WHERE {cond} AND id IN ({pick}) \
                 AND NOT EXISTS (SELECT 1 FROM webhook_attempts a WHERE a.delivery_id = webhook_deliveries.id)"
            );
            let (a, d) = on_db!(&self.db, p => {
                let _turn = self.write_turn().await;
                let mut tx = p.begin().await?;
                let a = sqlx::query(&attempts).bind(cutoff).bind(batch).execute(&mut *tx).await?.rows_affected();
                let d = sqlx::query(&deliveries).bind(cutoff).bind(batch).execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                (a, d)
            });
            pruned.attempts += a;
            pruned.deliveries += d;
        }
        let _turn = self.write_turn().await;
        pruned.events = on_db!(&self.db, p => sqlx::query(EVENTS).bind(cutoff).bind(batch)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(pruned)
    }

    /// Emits `referral.overdue` once for each referral past its due time while still waiting
    /// for an appointment, with the referral as `render` shows it (the same shape as every
    /// referral event). The conditional UPDATE makes it once across instances.
    pub async fn sweep_overdue_referrals(
        &self,
        now: Ts,
        render: impl Fn(&crate::store::referrals::ReferralRecord) -> Value,
    ) -> DbResult<usize> {
        const SQL: &str = "UPDATE referrals SET overdue_emitted = TRUE \
            WHERE status IN ('requested', 'accepted') AND due_by < $1 AND overdue_emitted = FALSE \
            RETURNING id, tenant";
        let n = on_db!(&self.db, p => {
            let _turn = self.write_turn().await;
            let mut tx = p.begin().await?;
            let rows: Vec<(Uuid, String)> = sqlx::query_as(SQL).bind(now).fetch_all(&mut *tx).await?;
            for (id, tenant) in &rows {
                let sql = format!("{} WHERE r.id = $1 AND r.tenant = $2", super::referrals::SELECT);
                let row: Option<super::referrals::ReferralRow> = sqlx::query_as(&sql)
                    .bind(id).bind(tenant).fetch_optional(&mut *tx).await?;
                let Some(referral) = row.map(|r| r.read(self, tenant)).transpose()? else {
                    continue;
                };
                let data = render(&referral);
                emit_event!(self, tx, tenant, crate::events::WebhookEvent::ReferralOverdue, &data, now)?;
            }
            tx.commit().await?;
            rows.len()
        });
        Ok(n)
    }

    /// Emits `plan.review_due` once per review date that has been reached.
    pub async fn sweep_plan_reviews(&self, today: chrono::NaiveDate, now: Ts) -> DbResult<usize> {
        let n = on_db!(&self.db, p => {
            let _turn = self.write_turn().await;
            let mut tx = p.begin().await?;
            let rows: Vec<(Uuid, String, String, i64, chrono::NaiveDate)> = sqlx::query_as(REVIEW_SWEEP).bind(today).fetch_all(&mut *tx).await?;
            for (id, tenant, subject, version, due) in &rows {
                let data = serde_json::to_value(crate::events::PlanReviewDue {
                    plan_id: *id,
                    subject: crate::domain::types::SubjectRef::recorded(subject.clone()),
                    version: *version,
                    next_review_due: *due,
                })
                .unwrap_or_default();
                emit_event!(self, tx, tenant, crate::events::WebhookEvent::PlanReviewDue, &data, now)?;
            }
            tx.commit().await?;
            rows.len()
        });
        Ok(n)
    }

    /// Forgets idempotency keys older than `before` (kept at least 24 h).
    pub async fn sweep_idempotency_keys(&self, before: Ts) -> DbResult<()> {
        let _turn = self.write_turn().await;
        on_db!(&self.db, p => sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    // ---- webhooks ----

    /// Registers a webhook with its audit entry, in one transaction: refused when the tenant
    /// already has `cap` webhooks, or one with the same URL and events (`events` is the
    /// normalised, sorted list).
    pub async fn insert_webhook(
        &self,
        w: &NewWebhook<'_>,
        cap: u32,
        audit: &AuditEntry,
    ) -> DbResult<InsertWebhook> {
        const COUNT: &str =
            "SELECT COUNT(*) FROM webhooks WHERE tenant = $1 AND deleted_at IS NULL";
        const SAME: &str =
            "SELECT id FROM webhooks WHERE tenant = $1 AND url = $2 AND events = $3 \
            AND deleted_at IS NULL";
        let r = on_db!(&self.db, p => {
            let _turn = self.write_turn().await;
            let mut tx = p.begin().await?;
            if matches!(self.db, Db::Postgres(_)) {
                // Serialises creates per tenant so that the cap and the duplicate check hold
                // under concurrent requests (SQLite's write lock does the same below).
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7041))")
                    .bind(w.tenant).execute(&mut *tx).await?;
            } else {
                sqlx::query("UPDATE webhooks SET tenant = tenant WHERE 1 = 0").execute(&mut *tx).await?;
            }
            let same: Option<(Uuid,)> = sqlx::query_as(SAME).bind(w.tenant).bind(w.url).bind(w.events)
                .fetch_optional(&mut *tx).await?;
            let (count,): (i64,) = sqlx::query_as(COUNT).bind(w.tenant).fetch_one(&mut *tx).await?;
            if let Some((existing,)) = same {
                InsertWebhook::Duplicate(existing)
            } else if count >= i64::from(cap) {
                InsertWebhook::TooMany
            } else {
                let hook_row = w.id.to_string();
                let secret = self.place(w.tenant, "webhooks.secret", &hook_row).seal_text(w.secret)
                    .map_err(super::DbError::from)?;
                sqlx::query("INSERT INTO webhooks (id, tenant, url, events, secret, description, created_at, created_by) \
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                    .bind(w.id).bind(w.tenant).bind(w.url).bind(w.events).bind(&secret).bind(w.description)
                    .bind(w.at).bind(&audit.actor)
                    .execute(&mut *tx).await?;
                insert_audit!(&mut *tx, audit)?;
                tx.commit().await?;
                InsertWebhook::Created
            }
        });
        self.durable().await?;
        Ok(r)
    }

    /// A page of the tenant's webhooks, oldest first, after the cursor id.
    pub async fn list_webhooks(
        &self,
        tenant: &str,
        after: Option<Uuid>,
        limit: i64,
    ) -> DbResult<Vec<WebhookRow>> {
        let rows = on_db!(&self.db, p => sqlx::query_as::<_, WebhookRow>("SELECT id, url, events, description, created_at, created_by \
            FROM webhooks WHERE tenant = $1 AND deleted_at IS NULL AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3")
            .bind(tenant).bind(after).bind(limit).fetch_all(p).await)?;
        Ok(rows)
    }

    pub async fn get_webhook(&self, tenant: &str, id: Uuid) -> DbResult<Option<WebhookRow>> {
        let row = on_db!(&self.db, p => sqlx::query_as::<_, WebhookRow>("SELECT id, url, events, description, created_at, created_by \
            FROM webhooks WHERE tenant = $1 AND id = $2 AND deleted_at IS NULL")
            .bind(tenant).bind(id).fetch_optional(p).await)?;
        Ok(row)
    }

    /// Whether the tenant has (or had: deleted webhooks keep their history) this webhook.
    pub async fn webhook_ever_existed(&self, tenant: &str, id: Uuid) -> DbResult<bool> {
        let row: Option<(Uuid,)> = on_db!(&self.db, p => sqlx::query_as("SELECT id FROM webhooks WHERE tenant = $1 AND id = $2")
            .bind(tenant).bind(id).fetch_optional(p).await)?;
        Ok(row.is_some())
    }

    /// Soft-deletes; pending deliveries are cancelled; the audit entry is written with it.
    /// False when there was nothing to delete (then nothing is written).
    pub async fn delete_webhook(
        &self,
        tenant: &str,
        id: Uuid,
        audit: &AuditEntry,
    ) -> DbResult<bool> {
        let n = on_db!(&self.db, p => {
            let _turn = self.write_turn().await;
            let mut tx = p.begin().await?;
            let n = sqlx::query("UPDATE webhooks SET deleted_at = $1 WHERE tenant = $2 AND id = $3 AND deleted_at IS NULL")
                .bind(audit.at).bind(tenant).bind(id).execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                sqlx::query("UPDATE webhook_deliveries SET status = 'cancelled' WHERE webhook_id = $1 AND status = 'pending'")
                    .bind(id).execute(&mut *tx).await?;
                insert_audit!(&mut *tx, audit)?;
                tx.commit().await?;
            }
            n
        });
        self.durable().await?;
        Ok(n > 0)
    }

    pub async fn list_deliveries(
        &self,
        tenant: &str,
        webhook: Uuid,
        status: Option<&str>,
        after: Option<Uuid>,
        limit: i64,
    ) -> DbResult<(Vec<DeliveryRow>, Vec<AttemptRow>)> {
        const SQL: &str = "SELECT d.id, d.event_id, e.type AS event_type, d.status, d.attempts, d.next_attempt_at, \
            d.last_status, d.last_error, d.created_at, d.delivered_at FROM webhook_deliveries d \
            JOIN outbox_events e ON e.id = d.event_id WHERE d.tenant = $1 AND d.webhook_id = $2 \
            AND ($3 IS NULL OR d.status = $3) AND ($4 IS NULL OR d.id > $4) ORDER BY d.id LIMIT $5";
        const ATTEMPTS: &str =
            "SELECT delivery_id, at, status_code, error, duration_ms FROM webhook_attempts \
            WHERE delivery_id = $1 ORDER BY id";
        let r = on_db!(&self.db, p => {
            let rows = sqlx::query_as::<_, DeliveryRow>(SQL).bind(tenant).bind(webhook).bind(status).bind(after).bind(limit)
                .fetch_all(p).await?;
            let mut attempts = Vec::new();
            for d in &rows {
                attempts.extend(sqlx::query_as::<_, AttemptRow>(ATTEMPTS).bind(d.id).fetch_all(p).await?);
            }
            (rows, attempts)
        });
        Ok(r)
    }

    /// Puts a dead (or delivered) delivery back in the queue, with its audit entry. False when
    /// not found (then nothing is written).
    pub async fn replay_delivery(
        &self,
        tenant: &str,
        webhook: Uuid,
        id: Uuid,
        audit: &AuditEntry,
    ) -> DbResult<bool> {
        let n = on_db!(&self.db, p => {
            let _turn = self.write_turn().await;
            let mut tx = p.begin().await?;
            let n = sqlx::query("UPDATE webhook_deliveries SET status = 'pending', attempts = 0, \
                next_attempt_at = $1, locked_until = NULL WHERE tenant = $2 AND webhook_id = $3 AND id = $4 \
                AND status IN ('dead', 'delivered') AND EXISTS (SELECT 1 FROM webhooks w WHERE w.id = $3 AND w.deleted_at IS NULL)")
                .bind(audit.at).bind(tenant).bind(webhook).bind(id).execute(&mut *tx).await?.rows_affected();
            if n > 0 {
                insert_audit!(&mut *tx, audit)?;
                tx.commit().await?;
            }
            n
        });
        self.durable().await?;
        Ok(n > 0)
    }
}
