//! The transactional outbox: events are written with the change that caused them and fanned
//! out to subscribed webhooks in the same transaction; workers claim deliveries with a lease.

use super::audit::insert_audit;
use super::{on_db, AuditEntry, Db, DbResult, Store, Ts};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

/// Writes an event and one pending delivery per subscribed webhook, inside an open
/// transaction (`$tx` is the transaction binding).
macro_rules! emit_event {
    ($tx:expr, $tenant:expr, $type:expr, $payload:expr, $at:expr) => {{
        let tenant: &str = $tenant;
        let kind: &str = $type;
        let at: $crate::store::Ts = $at;
        let event_id = uuid::Uuid::now_v7();
        let hooks: Vec<(uuid::Uuid,)> = sqlx::query_as(
            "SELECT id FROM webhooks WHERE tenant = $1 AND deleted_at IS NULL AND events LIKE $2",
        )
        .bind(tenant)
        .bind(format!("%,{kind},%"))
        .fetch_all(&mut *$tx)
        .await?;
        sqlx::query("INSERT INTO outbox_events (id, tenant, type, occurred_at, payload) VALUES ($1, $2, $3, $4, $5)")
            .bind(event_id)
            .bind(tenant)
            .bind(kind)
            .bind(at)
            .bind(sqlx::types::Json($payload))
            .execute(&mut *$tx)
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
            .execute(&mut *$tx)
            .await?;
        }
        event_id
    }};
}
pub(crate) use emit_event;

/// Everything a worker needs to send one delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryJob {
    pub id: Uuid,
    pub tenant: String,
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

impl Store {
    /// Leases up to `limit` due deliveries for `lease` (other instances skip them).
    pub async fn claim_deliveries(
        &self,
        now: Ts,
        lease_until: Ts,
        limit: i64,
    ) -> DbResult<Vec<DeliveryJob>> {
        const PICK: &str = "SELECT id FROM webhook_deliveries WHERE status = 'pending' \
            AND next_attempt_at <= $2 AND (locked_until IS NULL OR locked_until < $2) \
            ORDER BY next_attempt_at LIMIT $3";
        let claim = match self.db {
            Db::Sqlite(_) => format!("UPDATE webhook_deliveries SET locked_until = $1 WHERE id IN ({PICK}) RETURNING id"),
            // SKIP LOCKED: concurrent instances take disjoint batches instead of waiting.
            Db::Postgres(_) => format!("UPDATE webhook_deliveries SET locked_until = $1 WHERE id IN ({PICK} FOR UPDATE SKIP LOCKED) RETURNING id"),
        };
        const JOB: &str = "SELECT d.id, d.tenant, d.attempts, e.id AS event_id, e.type AS event_type, \
            e.occurred_at, e.payload, w.url, w.secret, (w.deleted_at IS NOT NULL) AS webhook_deleted \
            FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id \
            JOIN webhooks w ON w.id = d.webhook_id WHERE d.id = $1";
        let jobs = on_db!(&self.db, p => {
            let ids: Vec<(Uuid,)> = sqlx::query_as(&claim)
                .bind(lease_until)
                .bind(now)
                .bind(limit)
                .fetch_all(p)
                .await?;
            let mut jobs = Vec::with_capacity(ids.len());
            for (id,) in ids {
                if let Some(job) = sqlx::query_as::<_, DeliveryJob>(JOB).bind(id).fetch_optional(p).await? {
                    jobs.push(job);
                }
            }
            jobs
        });
        Ok(jobs)
    }

    /// Records an attempt and moves the delivery on (delivered, retry later, or dead).
    pub async fn finish_attempt(
        &self,
        job: &DeliveryJob,
        result: &AttemptResult,
        at: Ts,
        duration_ms: i64,
    ) -> DbResult<()> {
        let (status_code, error) = match result {
            AttemptResult::Delivered { status } => (Some(*status as i32), None),
            AttemptResult::Failed { status, error, .. } => {
                (status.map(|s| s as i32), Some(error.clone()))
            }
        };
        on_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            match result {
                AttemptResult::Delivered { .. } => {
                    sqlx::query("UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, \
                        delivered_at = $1, last_status = $2, last_error = NULL, locked_until = NULL WHERE id = $3")
                        .bind(at).bind(status_code).bind(job.id).execute(&mut *tx).await?;
                }
                AttemptResult::Failed { retry_at, .. } => {
                    let (status, next) = match retry_at {
                        Some(t) => ("pending", *t),
                        None => ("dead", at),
                    };
                    sqlx::query("UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, \
                        next_attempt_at = $2, last_status = $3, last_error = $4, locked_until = NULL WHERE id = $5")
                        .bind(status).bind(next).bind(status_code).bind(&error).bind(job.id)
                        .execute(&mut *tx).await?;
                }
            }
            sqlx::query("INSERT INTO webhook_attempts (id, delivery_id, at, status_code, error, duration_ms) \
                VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(Uuid::now_v7()).bind(job.id).bind(at).bind(status_code).bind(&error).bind(duration_ms)
                .execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// A delivery whose webhook was deleted is not sent.
    pub async fn cancel_delivery(&self, id: Uuid) -> DbResult<()> {
        on_db!(&self.db, p => sqlx::query("UPDATE webhook_deliveries SET status = 'cancelled', locked_until = NULL WHERE id = $1")
            .bind(id).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Emits `referral.overdue` once for each referral past its due time while still waiting
    /// for an appointment. The conditional UPDATE makes it once across instances.
    pub async fn sweep_overdue_referrals(&self, now: Ts) -> DbResult<usize> {
        const SQL: &str = "UPDATE referrals SET overdue_emitted = TRUE \
            WHERE status IN ('requested', 'accepted') AND due_by < $1 AND overdue_emitted = FALSE \
            RETURNING id, tenant, subject, version, body";
        let n = on_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            let rows: Vec<(Uuid, String, String, i64, Json<Value>)> = sqlx::query_as(SQL).bind(now).fetch_all(&mut *tx).await?;
            for (id, tenant, subject, version, body) in &rows {
                let mut data = body.0.clone();
                if let Value::Object(m) = &mut data {
                    m.insert("id".into(), Value::from(id.to_string()));
                    m.insert("subject".into(), Value::from(subject.clone()));
                    m.insert("version".into(), Value::from(*version));
                    m.insert("overdue".into(), Value::Bool(true));
                }
                emit_event!(tx, tenant, "referral.overdue", &data, now);
            }
            tx.commit().await?;
            rows.len()
        });
        Ok(n)
    }

    /// Emits `plan.review_due` once per review date that has been reached.
    pub async fn sweep_plan_reviews(&self, today: chrono::NaiveDate, now: Ts) -> DbResult<usize> {
        const SQL: &str = "UPDATE plans SET review_notified_for = review_due \
            WHERE review_due <= $1 AND (review_notified_for IS NULL OR review_notified_for <> review_due) \
            RETURNING id, tenant, subject, version, review_due";
        let n = on_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            let rows: Vec<(Uuid, String, String, i64, chrono::NaiveDate)> = sqlx::query_as(SQL).bind(today).fetch_all(&mut *tx).await?;
            for (id, tenant, subject, version, due) in &rows {
                let data = serde_json::json!({"plan_id": id, "subject": subject, "version": version, "next_review_due": due});
                emit_event!(tx, tenant, "plan.review_due", &data, now);
            }
            tx.commit().await?;
            rows.len()
        });
        Ok(n)
    }

    /// Forgets idempotency keys older than `before` (kept at least 24 h).
    pub async fn sweep_idempotency_keys(&self, before: Ts) -> DbResult<()> {
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
                sqlx::query("INSERT INTO webhooks (id, tenant, url, events, secret, description, created_at, created_by) \
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                    .bind(w.id).bind(w.tenant).bind(w.url).bind(w.events).bind(w.secret).bind(w.description)
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
