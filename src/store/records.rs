//! Versioned records (plans, safety protocols): one current row and every version kept.

use super::audit::insert_audit;
use super::{on_db, AuditEntry, DbError, DbResult, Store, Ts};
use chrono::NaiveDate;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

/// The tables behind one kind of versioned record.
#[derive(Debug, Clone, Copy)]
pub struct RecordTable {
    pub table: &'static str,
    pub versions: &'static str,
    /// The `resource_type` written to the audit trail.
    pub resource_type: &'static str,
}

pub const PLANS: RecordTable = RecordTable {
    table: "plans",
    versions: "plan_versions",
    resource_type: "plan",
};

pub const SAFETY_PROTOCOLS: RecordTable = RecordTable {
    table: "safety_protocols",
    versions: "safety_protocol_versions",
    resource_type: "safety_protocol",
};

/// One version of a record, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Record {
    pub id: Uuid,
    pub subject: String,
    pub version: i64,
    pub body: Json<Value>,
    pub review_due: NaiveDate,
    pub created_at: Ts,
    pub updated_at: Ts,
    /// Who wrote this version (the token's `sub`).
    pub updated_by: Option<String>,
}

#[derive(Debug)]
pub enum UpdateError {
    NotFound,
    /// `If-Match` named another version; carries the current one.
    VersionMismatch(i64),
    Db(DbError),
}

impl From<sqlx::Error> for UpdateError {
    fn from(e: sqlx::Error) -> Self {
        UpdateError::Db(e.into())
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub subject: Option<String>,
    pub review_due_before: Option<NaiveDate>,
    /// Keyset cursor: the last row of the previous page.
    pub after: Option<(NaiveDate, Uuid)>,
    pub limit: i64,
}

impl RecordTable {
    fn select(&self) -> String {
        format!(
            "SELECT r.id, r.subject, r.version, r.body, r.review_due, r.created_at, r.updated_at, \
             v.recorded_by AS updated_by FROM {t} r \
             LEFT JOIN {v} v ON v.record_id = r.id AND v.version = r.version",
            t = self.table,
            v = self.versions
        )
    }
}

impl Store {
    #[allow(clippy::too_many_arguments)]
    /// Inserts version 1. `Conflict` when the subject already has one (returned with its id).
    pub async fn insert_record(
        &self,
        t: RecordTable,
        id: Uuid,
        tenant: &str,
        subject: &str,
        body: &Value,
        review_due: NaiveDate,
        audit: &AuditEntry,
    ) -> DbResult<Record> {
        let insert = format!(
            "INSERT INTO {} (id, tenant, subject, version, body, review_due, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, $4, $5, $6, $6)",
            t.table
        );
        let insert_version = format!(
            "INSERT INTO {} (record_id, tenant, version, body, review_due, recorded_at, recorded_by) \
             VALUES ($1, $2, 1, $3, $4, $5, $6)",
            t.versions
        );
        let now = audit.at;
        on_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            sqlx::query(&insert)
                .bind(id)
                .bind(tenant)
                .bind(subject)
                .bind(Json(body))
                .bind(review_due)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&insert_version)
                .bind(id)
                .bind(tenant)
                .bind(Json(body))
                .bind(review_due)
                .bind(now)
                .bind(&audit.actor)
                .execute(&mut *tx)
                .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
        });
        Ok(Record {
            id,
            subject: subject.to_string(),
            version: 1,
            body: Json(body.clone()),
            review_due,
            created_at: now,
            updated_at: now,
            updated_by: Some(audit.actor.clone()),
        })
    }

    pub async fn get_record(
        &self,
        t: RecordTable,
        tenant: &str,
        id: Uuid,
    ) -> DbResult<Option<Record>> {
        let sql = format!("{} WHERE r.id = $1 AND r.tenant = $2", t.select());
        let row = on_db!(&self.db, p => sqlx::query_as::<_, Record>(&sql)
            .bind(id)
            .bind(tenant)
            .fetch_optional(p)
            .await)?;
        Ok(row)
    }

    pub async fn get_record_by_subject(
        &self,
        t: RecordTable,
        tenant: &str,
        subject: &str,
    ) -> DbResult<Option<Record>> {
        let sql = format!("{} WHERE r.tenant = $1 AND r.subject = $2", t.select());
        let row = on_db!(&self.db, p => sqlx::query_as::<_, Record>(&sql)
            .bind(tenant)
            .bind(subject)
            .fetch_optional(p)
            .await)?;
        Ok(row)
    }

    /// Writes a new version if the current one is `expected` (any when `None`). Of concurrent
    /// writers naming the same version exactly one wins: the version check and the increment
    /// are one conditional UPDATE.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_record(
        &self,
        t: RecordTable,
        tenant: &str,
        id: Uuid,
        expected: Option<i64>,
        body: &Value,
        review_due: NaiveDate,
        audit: &AuditEntry,
    ) -> Result<Record, UpdateError> {
        let update = format!(
            "UPDATE {} SET version = version + 1, body = $1, review_due = $2, updated_at = $3 \
             WHERE id = $4 AND tenant = $5 AND ($6 IS NULL OR version = $6) \
             RETURNING version, subject, created_at",
            t.table
        );
        let insert_version = format!(
            "INSERT INTO {} (record_id, tenant, version, body, review_due, recorded_at, recorded_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            t.versions
        );
        let current = format!(
            "SELECT version FROM {} WHERE id = $1 AND tenant = $2",
            t.table
        );
        let now = audit.at;
        on_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            let row: Option<(i64, String, Ts)> = sqlx::query_as(&update)
                .bind(Json(body))
                .bind(review_due)
                .bind(now)
                .bind(id)
                .bind(tenant)
                .bind(expected)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((version, subject, created_at)) = row else {
                let cur: Option<(i64,)> = sqlx::query_as(&current)
                    .bind(id)
                    .bind(tenant)
                    .fetch_optional(&mut *tx)
                    .await?;
                return Err(match cur {
                    None => UpdateError::NotFound,
                    Some((v,)) => UpdateError::VersionMismatch(v),
                });
            };
            sqlx::query(&insert_version)
                .bind(id)
                .bind(tenant)
                .bind(version)
                .bind(Json(body))
                .bind(review_due)
                .bind(now)
                .bind(&audit.actor)
                .execute(&mut *tx)
                .await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            Ok(Record {
                id,
                subject,
                version,
                body: Json(body.clone()),
                review_due,
                created_at,
                updated_at: now,
                updated_by: Some(audit.actor.clone()),
            })
        })
    }

    /// Versions newest first, below `before_version` when given; `None` when the record does
    /// not exist for this tenant.
    pub async fn list_versions(
        &self,
        t: RecordTable,
        tenant: &str,
        id: Uuid,
        before_version: Option<i64>,
        limit: i64,
    ) -> DbResult<Option<Vec<Record>>> {
        let sql = format!(
            "SELECT v.record_id AS id, r.subject, v.version, v.body, v.review_due, r.created_at, \
             v.recorded_at AS updated_at, v.recorded_by AS updated_by \
             FROM {v} v JOIN {t} r ON r.id = v.record_id \
             WHERE v.record_id = $1 AND v.tenant = $2 AND r.tenant = $2 \
             AND ($3 IS NULL OR v.version < $3) ORDER BY v.version DESC LIMIT $4",
            t = t.table,
            v = t.versions
        );
        let rows = on_db!(&self.db, p => sqlx::query_as::<_, Record>(&sql)
            .bind(id)
            .bind(tenant)
            .bind(before_version)
            .bind(limit)
            .fetch_all(p)
            .await)?;
        if rows.is_empty() && self.get_record(t, tenant, id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(rows))
    }

    /// Records of a tenant by subject and/or review date, ordered by review date then id.
    pub async fn list_records(
        &self,
        t: RecordTable,
        tenant: &str,
        q: &ListQuery,
    ) -> DbResult<Vec<Record>> {
        let sql = format!(
            "{} WHERE r.tenant = $1 AND ($2 IS NULL OR r.subject = $2) \
             AND ($3 IS NULL OR r.review_due < $3) \
             AND ($4 IS NULL OR r.review_due > $4 OR (r.review_due = $4 AND r.id > $5)) \
             ORDER BY r.review_due, r.id LIMIT $6",
            t.select()
        );
        let (after_due, after_id) = match q.after {
            Some((d, id)) => (Some(d), Some(id)),
            None => (None, None),
        };
        let rows = on_db!(&self.db, p => sqlx::query_as::<_, Record>(&sql)
            .bind(tenant)
            .bind(&q.subject)
            .bind(q.review_due_before)
            .bind(after_due)
            .bind(after_id)
            .bind(q.limit)
            .fetch_all(p)
            .await)?;
        Ok(rows)
    }
}

impl Store {
    /// The subject's current plan and safety protocol (body and version) in one round trip:
    /// two primary-index lookups, nothing else — the recommendation's hot path.
    pub async fn plan_and_protocol(
        &self,
        tenant: &str,
        subject: &str,
    ) -> DbResult<(Option<(String, i64)>, Option<(String, i64)>)> {
        const SQL: &str = "SELECT 0 AS kind, version, body FROM plans WHERE tenant = $1 AND subject = $2 \
            UNION ALL SELECT 1 AS kind, version, body FROM safety_protocols WHERE tenant = $1 AND subject = $2";
        let rows: Vec<(i32, i64, Json<Box<serde_json::value::RawValue>>)> = on_db!(&self.db, p =>
            sqlx::query_as(SQL).bind(tenant).bind(subject).fetch_all(p).await)?;
        let (mut plan, mut protocol) = (None, None);
        for (kind, version, body) in rows {
            let found = Some((body.0.get().to_string(), version));
            if kind == 0 {
                plan = found;
            } else {
                protocol = found;
            }
        }
        Ok((plan, protocol))
    }
}
