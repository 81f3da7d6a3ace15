//! Fallback referrals: versioned, idempotent under retries, events in the same transaction.
//! The store takes and returns the domain's [`ReferralState`]; the JSON column holds its
//! stored form (`super::forms::referral`).

use super::audit::insert_audit;
use super::forms::StoredForm;
use super::outbox::emit_event;
use super::{change, on_db, record_row, AuditEntry, DbError, DbResult, RecordMeta, Store, Ts};
use crate::domain::referral::ReferralState;
use crate::events::WebhookEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

/// A referral as selected, before its body is read.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ReferralRow {
    id: Uuid,
    subject: String,
    version: i64,
    body: Json<Box<RawValue>>,
    created_at: Ts,
    updated_at: Ts,
    updated_by: Option<String>,
}

impl ReferralRow {
    pub(crate) fn read(self, store: &Store, tenant: &str) -> DbResult<ReferralRecord> {
        let row = record_row(self.id, self.version);
        let place = store.place(tenant, SEALED_AS, &row);
        Ok(ReferralRecord {
            state: ReferralState::decode_str(self.body.0.get(), &place)?,
            meta: RecordMeta {
                id: self.id,
                subject: self.subject,
                version: self.version,
                created_at: self.created_at,
                updated_at: self.updated_at,
                updated_by: self.updated_by,
            },
        })
    }
}

fn read_all(store: &Store, tenant: &str, rows: Vec<ReferralRow>) -> DbResult<Vec<ReferralRecord>> {
    rows.into_iter().map(|r| r.read(store, tenant)).collect()
}

/// What a referral's sealed fields are bound to (with `<id>@<version>`; the current row and
/// its version row hold the same body).
pub(crate) const SEALED_AS: &str = "referrals.body";

/// What a replayed response is bound to (with `<endpoint> <key>`).
pub(crate) const RESPONSE_SEALED_AS: &str = "idempotency_keys.response";

/// One version of a referral.
#[derive(Debug, Clone)]
pub struct ReferralRecord {
    pub meta: RecordMeta,
    pub state: ReferralState,
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

impl<E> From<DbError> for ChangeError<E> {
    fn from(e: DbError) -> Self {
        ChangeError::Db(e)
    }
}

impl<E> From<sqlx::Error> for ChangeError<E> {
    fn from(e: sqlx::Error) -> Self {
        ChangeError::Db(e.into())
    }
}

/// Why a referral was not created.
enum CreateFailed {
    /// Another request holds the idempotency key (its response, or a 409, is the answer).
    Claimed,
    Db(DbError),
}

impl From<DbError> for CreateFailed {
    fn from(e: DbError) -> Self {
        CreateFailed::Db(e)
    }
}

impl From<sqlx::Error> for CreateFailed {
    fn from(e: sqlx::Error) -> Self {
        CreateFailed::Db(e.into())
    }
}

pub(crate) const SELECT: &str = "SELECT r.id, r.subject, r.version, r.body, r.created_at, \
    r.updated_at, v.recorded_by AS updated_by FROM referrals r \
    LEFT JOIN referral_versions v ON v.record_id = r.id AND v.version = r.version";

/// Claims the key inside the open transaction (`$tx` is the transaction binding). Evaluates
/// to a `Result<bool, sqlx::Error>`: `Ok(true)` when this request owns the key (or has none).
/// The primary key, not a check-then-insert, decides between concurrent retries.
macro_rules! claim_key {
    ($tx:expr, $tenant:expr, $idem:expr, $at:expr) => {
        claim_key!(
            $tx,
            &mut super::writer::Savepoint::none(),
            $tenant,
            $idem,
            $at
        )
    };
    ($tx:expr, $sp:expr, $tenant:expr, $idem:expr, $at:expr) => {{
        let conn = &mut *$tx;
        let sp: &mut super::writer::Savepoint = $sp;
        let (tenant, idem, at): (&str, Option<&IdemKey<'_>>, Ts) = ($tenant, $idem, $at);
        async move {
            let Some(k) = idem else {
                return Ok::<bool, sqlx::Error>(true);
            };
            // RETURNING rather than the count of changed rows: SQLite reports the previous
            // insert's count for the savepoint statements that may precede this one.
            let claimed: Option<(String,)> = sqlx::query_as(&sp.sql(
                "INSERT INTO idempotency_keys (tenant, endpoint, key, request_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING key",
            ))
            .bind(tenant)
            .bind(k.endpoint)
            .bind(k.key)
            .bind(&k.request_hash)
            .bind(at)
            .fetch_optional(&mut *conn)
            .await?;
            Ok(claimed.is_some())
        }
        .await
    }};
}

/// Keeps the response for the request's idempotency key, if any, inside the open transaction
/// (`$tx` is the transaction binding), sealed whole (it holds the referral's free text; `$store`
/// has the keys). Evaluates to a `Result<(), DbError>`.
macro_rules! keep_response {
    ($store:expr, $tx:expr, $tenant:expr, $idem:expr, $resp:expr) => {{
        let conn = &mut *$tx;
        let store: &Store = $store;
        let (tenant, idem, resp): (&str, Option<&IdemKey<'_>>, &StoredResponse) =
            ($tenant, $idem, $resp);
        async move {
            if let Some(k) = idem {
                let row = format!("{} {}", k.endpoint, k.key);
                let sealed = store
                    .place(tenant, RESPONSE_SEALED_AS, &row)
                    .seal_value(&serde_json::to_value(resp).unwrap_or_default())?;
                sqlx::query("UPDATE idempotency_keys SET response = $1 WHERE tenant = $2 AND endpoint = $3 AND key = $4")
                    .bind(Json(&sealed))
                    .bind(tenant)
                    .bind(k.endpoint)
                    .bind(k.key)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok::<(), DbError>(())
        }
        .await
    }};
}

impl Store {
    async fn stored_response<T>(&self, tenant: &str, k: &IdemKey<'_>) -> DbResult<Idempotent<T>> {
        let row: Option<(String, Option<Json<Value>>)> = on_db!(&self.db, p => sqlx::query_as(
            "SELECT request_hash, response FROM idempotency_keys WHERE tenant = $1 AND endpoint = $2 AND key = $3")
            .bind(tenant).bind(k.endpoint).bind(k.key).fetch_optional(p).await)?;
        Ok(match row {
            Some((hash, _)) if hash != k.request_hash => Idempotent::KeyReused,
            Some((_, Some(resp))) => {
                let row = format!("{} {}", k.endpoint, k.key);
                let v = self
                    .place(tenant, RESPONSE_SEALED_AS, &row)
                    .open_value(resp.0)?;
                let resp: StoredResponse = serde_json::from_value(v).map_err(|_| {
                    DbError::Crypto(crate::crypto::CryptoError::Corrupt(
                        "a stored response does not read",
                    ))
                })?;
                Idempotent::Replay(resp)
            }
            // Claimed by a request that has not finished (SQLite only sees this under contention).
            _ => return Err(DbError::Unavailable("idempotency key in use".into())),
        })
    }

    /// Creates a referral (version 1) with its audit entry and `referral.created`, whose
    /// payload is the rendered response; with an idempotency key, a retry gets the first
    /// response back.
    pub async fn create_referral(
        &self,
        tenant: &str,
        id: Uuid,
        state: ReferralState,
        audit: &AuditEntry,
        idem: Option<&IdemKey<'_>>,
        render: impl FnOnce(&ReferralRecord) -> StoredResponse,
    ) -> DbResult<Idempotent<ReferralRecord>> {
        let now = audit.at;
        let row = record_row(id, 1);
        let body = state.encode(&self.place(tenant, SEALED_AS, &row))?;
        let status = state.status.as_str();
        let due_by = Ts::from(state.due_by);
        let record = ReferralRecord {
            meta: RecordMeta {
                id,
                subject: state.request.subject.as_str().to_string(),
                version: 1,
                created_at: now,
                updated_at: now,
                updated_by: Some(audit.actor.clone()),
            },
            state,
        };
        let resp = render(&record);
        let (owner, subject, actor, store) = (
            tenant.to_string(),
            record.meta.subject.clone(),
            audit.actor.clone(),
            self.clone(),
        );
        let key = idem.map(|k| {
            (
                k.endpoint.to_string(),
                k.key.to_string(),
                k.request_hash.clone(),
            )
        });
        // With the response kept under the idempotency key; `Err(Claimed)` when another
        // request holds the key.
        let done: Result<StoredResponse, CreateFailed> = change!(self, audit, c, sp => {
            let idem = key.as_ref().map(|(endpoint, key, hash)| IdemKey {
                endpoint,
                key,
                request_hash: hash.clone(),
            });
            if !claim_key!(c, sp, &owner, idem.as_ref(), now)? {
                return Err(CreateFailed::Claimed);
            }
            sqlx::query(&sp.sql("INSERT INTO referrals (id, tenant, subject, version, body, status, due_by, created_at, updated_at) \
                VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $7)"))
                .bind(id).bind(&owner).bind(&subject).bind(Json(&body)).bind(status).bind(due_by).bind(now)
                .execute(&mut *c).await?;
            sqlx::query("INSERT INTO referral_versions (record_id, tenant, version, body, recorded_at, recorded_by) \
                VALUES ($1, $2, 1, $3, $4, $5)")
                .bind(id).bind(&owner).bind(Json(&body)).bind(now).bind(&actor)
                .execute(&mut *c).await?;
            emit_event!(&store, c, &owner, WebhookEvent::ReferralCreated, &resp.body, now)?;
            keep_response!(&store, c, &owner, idem.as_ref(), &resp)?;
            Ok::<_, CreateFailed>(resp)
        });
        match (done, idem) {
            (Ok(resp), _) => Ok(Idempotent::Fresh(record, resp)),
            (Err(CreateFailed::Claimed), Some(k)) => self.stored_response(tenant, k).await,
            (Err(CreateFailed::Claimed), None) => Err(DbError::Conflict),
            (Err(CreateFailed::Db(e)), _) => Err(e),
        }
    }

    pub async fn get_referral(&self, tenant: &str, id: Uuid) -> DbResult<Option<ReferralRecord>> {
        let sql = format!("{SELECT} WHERE r.id = $1 AND r.tenant = $2");
        let row = on_db!(&self.db, p => sqlx::query_as::<_, ReferralRow>(&sql).bind(id).bind(tenant).fetch_optional(p).await)?;
        row.map(|r| r.read(self, tenant)).transpose()
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
    ) -> DbResult<Vec<ReferralRecord>> {
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
        read_all(self, tenant, rows)
    }

    pub async fn referral_versions(
        &self,
        tenant: &str,
        id: Uuid,
        before: Option<i64>,
        limit: i64,
    ) -> DbResult<Vec<ReferralRecord>> {
        const SQL: &str = "SELECT v.record_id AS id, r.subject, v.version, v.body, r.created_at, \
            v.recorded_at AS updated_at, v.recorded_by AS updated_by FROM referral_versions v \
            JOIN referrals r ON r.id = v.record_id WHERE v.record_id = $1 AND v.tenant = $2 \
            AND ($3 IS NULL OR v.version < $3) ORDER BY v.version DESC LIMIT $4";
        let rows = on_db!(&self.db, p => sqlx::query_as::<_, ReferralRow>(SQL).bind(id).bind(tenant).bind(before).bind(limit).fetch_all(p).await)?;
        read_all(self, tenant, rows)
    }

    /// Applies a status change decided by `apply` (the domain state machine) to the current
    /// referral, under a row lock taken first (a no-op UPDATE: SQLite's write lock, PostgreSQL's
    /// row lock), writing a new version, the audit entry (with the referral's subject) and
    /// `referral.status_changed`, whose payload is the rendered response.
    #[allow(clippy::too_many_arguments)]
    pub async fn change_referral_status<E>(
        &self,
        tenant: &str,
        id: Uuid,
        expected: Option<i64>,
        audit: &AuditEntry,
        idem: Option<&IdemKey<'_>>,
        apply: impl FnOnce(&ReferralRecord) -> Result<ReferralState, E>,
        render: impl FnOnce(&ReferralRecord) -> StoredResponse,
    ) -> Result<Idempotent<ReferralRecord>, ChangeError<E>> {
        let now = audit.at;
        let sql = format!("{SELECT} WHERE r.id = $1 AND r.tenant = $2");
        let outcome: Option<(ReferralRecord, StoredResponse)> = on_db!(&self.db, p => {
            let _turn = self.write_turn().await;
            let mut tx = p.begin().await?;
            if !claim_key!(tx, tenant, idem, now)? {
                None
            } else {
                sqlx::query("UPDATE referrals SET version = version WHERE id = $1 AND tenant = $2")
                    .bind(id).bind(tenant).execute(&mut *tx).await?;
                let Some(cur) = sqlx::query_as::<_, ReferralRow>(&sql).bind(id).bind(tenant).fetch_optional(&mut *tx).await? else {
                    return Err(ChangeError::NotFound);
                };
                let cur = cur.read(self, tenant).map_err(ChangeError::Db)?;
                if let Some(v) = expected {
                    if v != cur.meta.version {
                        return Err(ChangeError::VersionMismatch(cur.meta.version));
                    }
                }
                let next = apply(&cur).map_err(ChangeError::Rejected)?;
                let row = record_row(id, cur.meta.version + 1);
                let body = next.encode(&self.place(tenant, SEALED_AS, &row)).map_err(|e| ChangeError::Db(e.into()))?;
                let n = sqlx::query("UPDATE referrals SET version = version + 1, body = $1, status = $2, updated_at = $3 \
                    WHERE id = $4 AND tenant = $5 AND version = $6")
                    .bind(Json(&body)).bind(next.status.as_str()).bind(now).bind(id).bind(tenant).bind(cur.meta.version)
                    .execute(&mut *tx).await?.rows_affected();
                if n != 1 {
                    return Err(ChangeError::Concurrent);
                }
                let record = ReferralRecord {
                    meta: RecordMeta {
                        version: cur.meta.version + 1,
                        updated_at: now,
                        updated_by: Some(audit.actor.clone()),
                        ..cur.meta
                    },
                    state: next,
                };
                let mut audit = audit.clone();
                audit.subject = Some(record.meta.subject.clone());
                sqlx::query("INSERT INTO referral_versions (record_id, tenant, version, body, recorded_at, recorded_by) \
                    VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(id).bind(tenant).bind(record.meta.version).bind(Json(&body)).bind(now).bind(&audit.actor)
                    .execute(&mut *tx).await?;
                insert_audit!(&mut *tx, &audit)?;
                let resp = render(&record);
                // The referral as every referral event carries it (its previous status is the
                // second-to-last entry of its history).
                emit_event!(self, tx, tenant, WebhookEvent::ReferralStatusChanged, &resp.body, now)?;
                keep_response!(self, tx, tenant, idem, &resp)?;
                tx.commit().await?;
                Some((record, resp))
            }
        });
        if outcome.is_some() {
            self.durable().await.map_err(ChangeError::Db)?;
        }
        match (outcome, idem) {
            (Some((record, resp)), _) => Ok(Idempotent::Fresh(record, resp)),
            (None, Some(k)) => self
                .stored_response(tenant, k)
                .await
                .map_err(ChangeError::Db),
            (None, None) => Err(ChangeError::Concurrent),
        }
    }
}
