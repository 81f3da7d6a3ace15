//! Fallback referrals: versioned, idempotent under retries, events in the same transaction.

use super::audit::insert_audit;
use super::outbox::emit_event;
use super::{on_db, AuditEntry, DbError, DbResult, Store, Ts};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReferralRow {
    pub id: Uuid,
    pub subject: String,
    pub version: i64,
    pub body: Json<Value>,
    pub status: String,
    pub due_by: Ts,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub updated_by: Option<String>,
}

/// An `Idempotency-Key` for one endpoint, with a hash of the request it came with.
pub struct IdemKey<'a> {
    pub endpoint: &'a str,
    pub key: &'a str,
    pub request_hash: String,
}

/// A response kept for replay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Value,
    pub etag: Option<String>,
    pub location: Option<String>,
}

pub enum Idempotent<T> {
    Fresh(T, StoredResponse),
    /// Same key, same request: the first response again.
    Replay(StoredResponse),
    /// Same key, another request.
    KeyReused,
}

pub enum ChangeError<E> {
    NotFound,
    VersionMismatch(i64),
    /// Another writer changed the referral between our read and write.
    Concurrent,
    Rejected(E),
    Db(DbError),
}

impl<E> From<sqlx::Error> for ChangeError<E> {
    fn from(e: sqlx::Error) -> Self {
        ChangeError::Db(e.into())
    }
}

const SELECT: &str =
    "SELECT r.id, r.subject, r.version, r.body, r.status, r.due_by, r.created_at, \
    r.updated_at, v.recorded_by AS updated_by FROM referrals r \
    LEFT JOIN referral_versions v ON v.record_id = r.id AND v.version = r.version";

/// Claims the key inside the open transaction: true when this request owns it. The primary
/// key, not a check-then-insert, decides between concurrent retries.
macro_rules! claim_key {
    ($tx:expr, $tenant:expr, $idem:expr, $at:expr) => {{
        match $idem {
            None => true,
            Some(k) => sqlx::query(
                "INSERT INTO idempotency_keys (tenant, endpoint, key, request_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind($tenant)
            .bind(k.endpoint)
            .bind(k.key)
            .bind(&k.request_hash)
            .bind($at)
            .execute(&mut *$tx)
            .await?
            .rows_affected()
                == 1,
        }
    }};
}

macro_rules! keep_response {
    ($tx:expr, $tenant:expr, $idem:expr, $resp:expr) => {{
        if let Some(k) = $idem {
            sqlx::query("UPDATE idempotency_keys SET response = $1 WHERE tenant = $2 AND endpoint = $3 AND key = $4")
                .bind(Json($resp))
                .bind($tenant)
                .bind(k.endpoint)
                .bind(k.key)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

impl Store {
    async fn stored_response<T>(&self, tenant: &str, k: &IdemKey<'_>) -> DbResult<Idempotent<T>> {
        let row: Option<(String, Option<Json<StoredResponse>>)> = on_db!(&self.db, p => sqlx::query_as(
            "SELECT request_hash, response FROM idempotency_keys WHERE tenant = $1 AND endpoint = $2 AND key = $3")
            .bind(tenant).bind(k.endpoint).bind(k.key).fetch_optional(p).await)?;
        Ok(match row {
            Some((hash, _)) if hash != k.request_hash => Idempotent::KeyReused,
            Some((_, Some(resp))) => Idempotent::Replay(resp.0),
            // Claimed by a request that has not finished (SQLite only sees this under contention).
            _ => return Err(DbError::Unavailable("idempotency key in use".into())),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn create_referral(
        &self,
        tenant: &str,
        id: Uuid,
        subject: &str,
        body: &Value,
        due_by: Ts,
        audit: &AuditEntry,
        idem: Option<&IdemKey<'_>>,
        render: impl FnOnce(&ReferralRow) -> StoredResponse,
    ) -> DbResult<Idempotent<ReferralRow>> {
        let now = audit.at;
        let row = ReferralRow {
            id,
            subject: subject.to_string(),
            version: 1,
            body: Json(body.clone()),
            status: "requested".into(),
            due_by,
            created_at: now,
            updated_at: now,
            updated_by: Some(audit.actor.clone()),
        };
        let resp = render(&row);
        let claimed = on_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            if !claim_key!(tx, tenant, idem, now) {
                false
            } else {
                sqlx::query("INSERT INTO referrals (id, tenant, subject, version, body, status, due_by, created_at, updated_at) \
                    VALUES ($1, $2, $3, 1, $4, 'requested', $5, $6, $6)")
                    .bind(id).bind(tenant).bind(subject).bind(Json(body)).bind(due_by).bind(now)
                    .execute(&mut *tx).await?;
                sqlx::query("INSERT INTO referral_versions (record_id, tenant, version, body, recorded_at, recorded_by) \
                    VALUES ($1, $2, 1, $3, $4, $5)")
                    .bind(id).bind(tenant).bind(Json(body)).bind(now).bind(&audit.actor)
                    .execute(&mut *tx).await?;
                insert_audit!(&mut *tx, audit)?;
                emit_event!(tx, tenant, "referral.created", &resp.body, now);
                keep_response!(tx, tenant, idem, &resp);
                tx.commit().await?;
                true
            }
        });
        match (claimed, idem) {
            (true, _) => Ok(Idempotent::Fresh(row, resp)),
            (false, Some(k)) => self.stored_response(tenant, k).await,
            (false, None) => Err(DbError::Conflict),
        }
    }

    pub async fn get_referral(&self, tenant: &str, id: Uuid) -> DbResult<Option<ReferralRow>> {
        let sql = format!("{SELECT} WHERE r.id = $1 AND r.tenant = $2");
        let row = on_db!(&self.db, p => sqlx::query_as::<_, ReferralRow>(&sql).bind(id).bind(tenant).fetch_optional(p).await)?;
        Ok(row)
    }

    #[allow(clippy::too_many_arguments)]
    /// Lists by subject, status and overdue-ness (`overdue` relative to `now`), oldest first.
    pub async fn list_referrals(
        &self,
        tenant: &str,
        subject: Option<&str>,
        status: Option<&str>,
        overdue: Option<bool>,
        now: Ts,
        after: Option<Uuid>,
        limit: i64,
    ) -> DbResult<Vec<ReferralRow>> {
        let overdue_sql = match overdue {
            None => "",
            Some(true) => " AND r.status IN ('requested', 'accepted') AND r.due_by < $4",
            Some(false) => " AND NOT (r.status IN ('requested', 'accepted') AND r.due_by < $4)",
        };
        let sql = format!(
            "{SELECT} WHERE r.tenant = $1 AND ($2 IS NULL OR r.subject = $2) AND ($3 IS NULL OR r.status = $3) \
             AND ($5 IS NULL OR r.id > $5) AND $4 = $4{overdue_sql} ORDER BY r.id LIMIT $6"
        );
        let rows = on_db!(&self.db, p => sqlx::query_as::<_, ReferralRow>(&sql)
            .bind(tenant).bind(subject).bind(status).bind(now).bind(after).bind(limit)
            .fetch_all(p).await)?;
        Ok(rows)
    }

    pub async fn referral_versions(
        &self,
        tenant: &str,
        id: Uuid,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<ReferralRow>> {
        const SQL: &str = "SELECT v.record_id AS id, r.subject, v.version, v.body, r.status, r.due_by, r.created_at, \
            v.recorded_at AS updated_at, v.recorded_by AS updated_by FROM referral_versions v \
            JOIN referrals r ON r.id = v.record_id WHERE v.record_id = $1 AND v.tenant = $2 \
            AND ($3 IS NULL OR v.version < $3) ORDER BY v.version DESC LIMIT $4";
        let rows = on_db!(&self.db, p => sqlx::query_as::<_, ReferralRow>(SQL).bind(id).bind(tenant).bind(before).bind(limit).fetch_all(p).await)?;
        Ok(rows)
    }

    /// Applies a status change decided by `apply` (the domain state machine) to the current
    /// row, under a row lock taken first (a no-op UPDATE: SQLite's write lock, PostgreSQL's row
    /// lock), writing a new version, the audit entry and `referral.status_changed`.
    #[allow(clippy::too_many_arguments)]
    pub async fn change_referral_status<E>(
        &self,
        tenant: &str,
        id: Uuid,
        expected: Option<i64>,
        audit: &AuditEntry,
        idem: Option<&IdemKey<'_>>,
        apply: impl FnOnce(&ReferralRow) -> Result<(Value, String), E>,
        render: impl FnOnce(&ReferralRow) -> StoredResponse,
    ) -> Result<Idempotent<ReferralRow>, ChangeError<E>> {
        let now = audit.at;
        let sql = format!("{SELECT} WHERE r.id = $1 AND r.tenant = $2");
        let outcome: Option<(ReferralRow, StoredResponse)> = on_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            if !claim_key!(tx, tenant, idem, now) {
                None
            } else {
                sqlx::query("UPDATE referrals SET version = version WHERE id = $1 AND tenant = $2")
                    .bind(id).bind(tenant).execute(&mut *tx).await?;
                let Some(cur) = sqlx::query_as::<_, ReferralRow>(&sql).bind(id).bind(tenant).fetch_optional(&mut *tx).await? else {
                    return Err(ChangeError::NotFound);
                };
                if let Some(v) = expected {
                    if v != cur.version {
                        return Err(ChangeError::VersionMismatch(cur.version));
                    }
                }
                let previous = cur.status.clone();
                let (body, status) = apply(&cur).map_err(ChangeError::Rejected)?;
                let n = sqlx::query("UPDATE referrals SET version = version + 1, body = $1, status = $2, updated_at = $3 \
                    WHERE id = $4 AND tenant = $5 AND version = $6")
                    .bind(Json(&body)).bind(&status).bind(now).bind(id).bind(tenant).bind(cur.version)
                    .execute(&mut *tx).await?.rows_affected();
                if n != 1 {
                    return Err(ChangeError::Concurrent);
                }
                // The caller cannot know the subject before the row is read: the trail of a
                // subject must list its status changes too.
                let mut audit = audit.clone();
                audit.subject.get_or_insert_with(|| cur.subject.clone());
                let row = ReferralRow {
                    version: cur.version + 1,
                    body: Json(body.clone()),
                    status,
                    updated_at: now,
                    updated_by: Some(audit.actor.clone()),
                    ..cur
                };
                sqlx::query("INSERT INTO referral_versions (record_id, tenant, version, body, recorded_at, recorded_by) \
                    VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(id).bind(tenant).bind(row.version).bind(Json(&body)).bind(now).bind(&audit.actor)
                    .execute(&mut *tx).await?;
                insert_audit!(&mut *tx, &audit)?;
                let resp = render(&row);
                let mut data = resp.body.clone();
                if let Value::Object(m) = &mut data {
                    m.insert("previous_status".into(), Value::from(previous));
                }
                emit_event!(tx, tenant, "referral.status_changed", &data, now);
                keep_response!(tx, tenant, idem, &resp);
                tx.commit().await?;
                Some((row, resp))
            }
        });
        match (outcome, idem) {
            (Some((row, resp)), _) => Ok(Idempotent::Fresh(row, resp)),
            (None, Some(k)) => self
                .stored_response(tenant, k)
                .await
                .map_err(ChangeError::Db),
            (None, None) => Err(ChangeError::Concurrent),
        }
    }
}
