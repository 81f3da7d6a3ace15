//! Versioned records (plans, safety protocols): one current row and every version kept.
//!
//! The store takes and returns domain values ([`Plan`], [`SafetyProtocol`]); what goes into
//! the JSON column is the record's stored form (`super::forms`), written at its newest format
//! and read back from any format it has had.

use super::cache::{Known, RecordCache, Shelf};
use super::change;
use super::forms::StoredForm;
use super::{on_db, record_row, AuditEntry, Db, DbError, DbResult, Store, Ts};
use crate::domain::plan::Plan;
use crate::domain::protocol::SafetyProtocol;
use chrono::NaiveDate;
use serde_json::value::RawValue;
use sqlx::types::Json;
use uuid::Uuid;

/// The tables behind one kind of versioned record.
#[derive(Debug, Clone, Copy)]
pub struct RecordTable {
    pub table: &'static str,
    pub versions: &'static str,
    /// The `resource_type` written to the audit trail.
    pub resource_type: &'static str,
    /// The table and column a body's sealed fields are bound to (the same for the current
    /// row and its version row, which hold the same body; the row is `<id>@<version>`).
    pub sealed_as: &'static str,
}

pub const PLANS: RecordTable = RecordTable {
    table: "plans",
    versions: "plan_versions",
    resource_type: "plan",
    sealed_as: "plans.body",
};

pub const SAFETY_PROTOCOLS: RecordTable = RecordTable {
    table: "safety_protocols",
    versions: "safety_protocol_versions",
    resource_type: "safety_protocol",
    sealed_as: "safety_protocols.body",
};

/// A domain type kept as a versioned record.
pub trait RecordKind: StoredForm + Clone + Send + Sync + 'static {
    const TABLE: RecordTable;
    fn subject(&self) -> &str;
    /// The date the record is next due for review (indexed for `review_due_before`).
    fn review_due(&self) -> NaiveDate;
    /// Where the in-memory cache keeps this kind (`super::cache`).
    fn shelf(cache: &RecordCache) -> &Shelf<Self>;
}

impl RecordKind for Plan {
    const TABLE: RecordTable = PLANS;
    fn shelf(cache: &RecordCache) -> &Shelf<Self> {
        &cache.plans
    }
    fn subject(&self) -> &str {
        self.subject.as_str()
    }
    fn review_due(&self) -> NaiveDate {
        self.next_review_due()
    }
}

impl RecordKind for SafetyProtocol {
    const TABLE: RecordTable = SAFETY_PROTOCOLS;
    fn shelf(cache: &RecordCache) -> &Shelf<Self> {
        &cache.protocols
    }
    fn subject(&self) -> &str {
        self.subject.as_str()
    }
    fn review_due(&self) -> NaiveDate {
        self.next_review_due()
    }
}

/// What the service keeps about every version of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordMeta {
    pub id: Uuid,
    pub subject: String,
    pub version: i64,
    pub created_at: Ts,
    /// When this version was written.
    pub updated_at: Ts,
    /// Who wrote this version (the token's `sub`).
    pub updated_by: Option<String>,
}

/// One version of a record.
#[derive(Debug, Clone)]
pub struct Record<T> {
    pub meta: RecordMeta,
    pub review_due: NaiveDate,
    pub content: T,
}

/// A row as selected, before its body is read.
#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    subject: String,
    version: i64,
    body: Json<Box<RawValue>>,
    review_due: NaiveDate,
    created_at: Ts,
    updated_at: Ts,
    updated_by: Option<String>,
}

impl Row {
    fn read<T: RecordKind>(self, store: &Store, tenant: &str) -> DbResult<Record<T>> {
        let row = record_row(self.id, self.version);
        let place = store.place(tenant, T::TABLE.sealed_as, &row);
        Ok(Record {
            content: T::decode_str(self.body.0.get(), &place)?,
            meta: RecordMeta {
                id: self.id,
                subject: self.subject,
                version: self.version,
                created_at: self.created_at,
                updated_at: self.updated_at,
                updated_by: self.updated_by,
            },
            review_due: self.review_due,
        })
    }
}

fn read_all<T: RecordKind>(
    store: &Store,
    tenant: &str,
    rows: Vec<Row>,
) -> DbResult<Vec<Record<T>>> {
    rows.into_iter().map(|r| r.read(store, tenant)).collect()
}

#[derive(Debug)]
pub enum UpdateError {
    NotFound,
    /// `If-Match` named another version; carries the current one.
    VersionMismatch(i64),
    Db(DbError),
}

impl From<DbError> for UpdateError {
    fn from(e: DbError) -> Self {
        UpdateError::Db(e)
    }
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
    /// Inserts version 1. `Conflict` when the subject already has one.
    pub async fn insert_record<T: RecordKind>(
        &self,
        id: Uuid,
        tenant: &str,
        content: T,
        audit: &AuditEntry,
    ) -> DbResult<Record<T>> {
        let t = T::TABLE;
        // Both rows in one statement, the body bound once: on SQLite a statement list
        // (parameters are numbered across it), one round trip to its worker thread; on
        // PostgreSQL a data-modifying WITH.
        let insert = format!(
            "INSERT INTO {} (id, tenant, subject, version, body, review_due, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, $4, $5, $6, $6)",
            t.table
        );
        let insert_version = format!(
            "INSERT INTO {} (record_id, tenant, version, body, review_due, recorded_at, recorded_by) \
             VALUES ($1, $2, 1, $4, $5, $6, $7)",
            t.versions
        );
        let both = match self.db {
            Db::Sqlite(_) => format!("{insert}; {insert_version}"),
            Db::Postgres(_) => format!("WITH created AS ({insert}) {insert_version}"),
        };
        let row = record_row(id, 1);
        let body = content.encode(&self.place(tenant, t.sealed_as, &row))?;
        let (subject, review_due) = (content.subject().to_string(), content.review_due());
        let now = audit.at;
        let (owner, subject_row, actor) =
            (tenant.to_string(), subject.clone(), audit.actor.clone());
        change!(self, audit, c, sp => {
            sqlx::query(&sp.sql(&both))
                .bind(id)
                .bind(&owner)
                .bind(&subject_row)
                .bind(Json(&body))
                .bind(review_due)
                .bind(now)
                .bind(&actor)
                .execute(&mut *c)
                .await?;
            Ok::<_, DbError>(())
        })?;
        let record = Record {
            meta: RecordMeta {
                id,
                subject,
                version: 1,
                created_at: now,
                updated_at: now,
                updated_by: Some(audit.actor.clone()),
            },
            review_due,
            content,
        };
        self.cached::<T>(tenant, &record);
        Ok(record)
    }

    /// Offers a version to the in-memory cache (SQLite), if there is one.
    fn cached<T: RecordKind>(&self, tenant: &str, record: &Record<T>) {
        if let Some(c) = &self.cache {
            T::shelf(c).offer(tenant, record);
        }
    }

    pub async fn get_record<T: RecordKind>(
        &self,
        tenant: &str,
        id: Uuid,
    ) -> DbResult<Option<Record<T>>> {
        if let Some(r) = self
            .cache
            .as_ref()
            .and_then(|c| T::shelf(c).by_id(tenant, id))
        {
            return Ok(Some((*r).clone()));
        }
        let sql = format!("{} WHERE r.id = $1 AND r.tenant = $2", T::TABLE.select());
        let row = on_db!(&self.db, p => sqlx::query_as::<_, Row>(&sql)
            .bind(id)
            .bind(tenant)
            .fetch_optional(p)
            .await)?;
        let record = row.map(|r| r.read::<T>(self, tenant)).transpose()?;
        if let Some(r) = &record {
            self.cached(tenant, r);
        }
        Ok(record)
    }

    pub async fn get_record_by_subject<T: RecordKind>(
        &self,
        tenant: &str,
        subject: &str,
    ) -> DbResult<Option<Record<T>>> {
        if let Some(c) = &self.cache {
            match T::shelf(c).by_subject(tenant, subject) {
                Known::Record(r) => return Ok(Some((*r).clone())),
                Known::None => return Ok(None),
                Known::Unknown => {}
            }
        }
        let sql = format!(
            "{} WHERE r.tenant = $1 AND r.subject = $2",
            T::TABLE.select()
        );
        let row = on_db!(&self.db, p => sqlx::query_as::<_, Row>(&sql)
            .bind(tenant)
            .bind(subject)
            .fetch_optional(p)
            .await)?;
        let record = row.map(|r| r.read::<T>(self, tenant)).transpose()?;
        match (&record, &self.cache) {
            (Some(r), _) => self.cached(tenant, r),
            (None, Some(c)) => T::shelf(c).offer_none(tenant, subject),
            (None, None) => {}
        }
        Ok(record)
    }

    /// The id of the subject's record of this kind, if any.
    pub async fn record_id_by_subject(
        &self,
        t: RecordTable,
        tenant: &str,
        subject: &str,
    ) -> DbResult<Option<Uuid>> {
        let sql = format!(
            "SELECT id FROM {} WHERE tenant = $1 AND subject = $2",
            t.table
        );
        let row: Option<(Uuid,)> = on_db!(&self.db, p => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(subject)
            .fetch_optional(p)
            .await)?;
        Ok(row.map(|(id,)| id))
    }

    /// Writes a new version if the current one is `expected` (any when `None`). Of concurrent
    /// writers naming the same version exactly one wins: the version check and the increment
    /// are one conditional UPDATE. The subject cannot change: another subject is `NotFound`
    /// from the caller's point of view and is checked by the caller first.
    pub async fn update_record<T: RecordKind>(
        &self,
        tenant: &str,
        id: Uuid,
        expected: Option<i64>,
        content: T,
        audit: &AuditEntry,
    ) -> Result<Record<T>, UpdateError> {
        let t = T::TABLE;
        // The body is sealed for the new version, known once the version is taken: the
        // body follows in a second statement of the same transaction.
        let update = format!(
            "UPDATE {} SET version = version + 1, review_due = $1, updated_at = $2 \
             WHERE id = $3 AND tenant = $4 AND ($5 IS NULL OR version = $5) \
             RETURNING version, subject, created_at",
            t.table
        );
        let set_body = format!(
            "UPDATE {} SET body = $1 WHERE id = $2 AND tenant = $3",
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
        let review_due = content.review_due();
        let now = audit.at;
        let (owner, actor, store) = (tenant.to_string(), audit.actor.clone(), self.clone());
        // Evaluates to the new version's row, and the content back.
        let ((version, subject, created_at), content) = change!(self, audit, c, sp => {
            let row: Option<(i64, String, Ts)> = sqlx::query_as(&sp.sql(&update))
                .bind(review_due)
                .bind(now)
                .bind(id)
                .bind(&owner)
                .bind(expected)
                .fetch_optional(&mut *c)
                .await?;
            let Some(row) = row else {
                let cur: Option<(i64,)> = sqlx::query_as(&current)
                    .bind(id)
                    .bind(&owner)
                    .fetch_optional(&mut *c)
                    .await?;
                return Err(match cur {
                    None => UpdateError::NotFound,
                    Some((v,)) => UpdateError::VersionMismatch(v),
                });
            };
            let sealed_row = record_row(id, row.0);
            let body = content
                .encode(&store.place(&owner, t.sealed_as, &sealed_row))
                .map_err(|e| UpdateError::Db(e.into()))?;
            sqlx::query(&set_body)
                .bind(Json(&body))
                .bind(id)
                .bind(&owner)
                .execute(&mut *c)
                .await?;
            sqlx::query(&insert_version)
                .bind(id)
                .bind(&owner)
                .bind(row.0)
                .bind(Json(&body))
                .bind(review_due)
                .bind(now)
                .bind(&actor)
                .execute(&mut *c)
                .await?;
            Ok::<_, UpdateError>((row, content))
        })?;
        let record = Record {
            meta: RecordMeta {
                id,
                subject,
                version,
                created_at,
                updated_at: now,
                updated_by: Some(audit.actor.clone()),
            },
            review_due,
            content,
        };
        self.cached::<T>(tenant, &record);
        Ok(record)
    }

    /// Versions newest first, below `before_version` when given; `None` when the record does
    /// not exist for this tenant.
    pub async fn list_versions<T: RecordKind>(
        &self,
        tenant: &str,
        id: Uuid,
        before_version: Option<i64>,
        limit: i64,
    ) -> DbResult<Option<Vec<Record<T>>>> {
        let t = T::TABLE;
        let sql = format!(
            "SELECT v.record_id AS id, r.subject, v.version, v.body, v.review_due, r.created_at, \
             v.recorded_at AS updated_at, v.recorded_by AS updated_by \
             FROM {v} v JOIN {t} r ON r.id = v.record_id \
             WHERE v.record_id = $1 AND v.tenant = $2 AND r.tenant = $2 \
             AND ($3 IS NULL OR v.version < $3) ORDER BY v.version DESC LIMIT $4",
            t = t.table,
            v = t.versions
        );
        let rows = on_db!(&self.db, p => sqlx::query_as::<_, Row>(&sql)
            .bind(id)
            .bind(tenant)
            .bind(before_version)
            .bind(limit)
            .fetch_all(p)
            .await)?;
        if rows.is_empty() && self.get_record::<T>(tenant, id).await?.is_none() {
            return Ok(None);
        }
        read_all(self, tenant, rows).map(Some)
    }

    /// How many versions of record `id` the versions table `versions` (`plan_versions`,
    /// `referral_versions`, …) holds recorded at or after `since`: the newest ones, versions
    /// being recorded in order.
    pub async fn count_versions_since(
        &self,
        versions: &'static str,
        tenant: &str,
        id: Uuid,
        since: Ts,
    ) -> DbResult<i64> {
        let sql = format!(
            "SELECT COUNT(*) FROM {versions} WHERE record_id = $1 AND tenant = $2 AND recorded_at >= $3"
        );
        let (n,): (i64,) = on_db!(&self.db, p => sqlx::query_as(&sql)
            .bind(id)
            .bind(tenant)
            .bind(since)
            .fetch_one(p)
            .await)?;
        Ok(n)
    }

    /// Records of a tenant by subject and/or review date, ordered by review date then id.
    pub async fn list_records<T: RecordKind>(
        &self,
        tenant: &str,
        q: &ListQuery,
    ) -> DbResult<Vec<Record<T>>> {
        let sql = format!(
            "{} WHERE r.tenant = $1 AND ($2 IS NULL OR r.subject = $2) \
             AND ($3 IS NULL OR r.review_due < $3) \
             AND ($4 IS NULL OR r.review_due > $4 OR (r.review_due = $4 AND r.id > $5)) \
             ORDER BY r.review_due, r.id LIMIT $6",
            T::TABLE.select()
        );
        let (after_due, after_id) = match q.after {
            Some((d, id)) => (Some(d), Some(id)),
            None => (None, None),
        };
        let rows = on_db!(&self.db, p => sqlx::query_as::<_, Row>(&sql)
            .bind(tenant)
            .bind(&q.subject)
            .bind(q.review_due_before)
            .bind(after_due)
            .bind(after_id)
            .bind(q.limit)
            .fetch_all(p)
            .await)?;
        read_all(self, tenant, rows)
    }

    /// The subject's current plan and safety protocol, in one round trip: two primary-index
    /// lookups, nothing else — the recommendation's hot path.
    pub async fn plan_and_protocol(
        &self,
        tenant: &str,
        subject: &str,
    ) -> DbResult<(Option<Current<Plan>>, Option<Current<SafetyProtocol>>)> {
        if let Some(c) = &self.cache {
            let known = (
                c.plans.by_subject(tenant, subject),
                c.protocols.by_subject(tenant, subject),
            );
            if let (Known::Unknown, _) | (_, Known::Unknown) = known {
                // Read each (and so learn both for the next time).
                let plan = self.get_record_by_subject::<Plan>(tenant, subject).await?;
                let protocol = self
                    .get_record_by_subject::<SafetyProtocol>(tenant, subject)
                    .await?;
                return Ok((plan.map(Current::from), protocol.map(Current::from)));
            }
            return Ok((current(known.0), current(known.1)));
        }
        const SQL: &str = "SELECT 0 AS kind, id, version, body FROM plans WHERE tenant = $1 AND subject = $2 \
            UNION ALL SELECT 1 AS kind, id, version, body FROM safety_protocols WHERE tenant = $1 AND subject = $2";
        let rows: Vec<(i32, Uuid, i64, Json<Box<RawValue>>)> = on_db!(&self.db, p =>
            sqlx::query_as(SQL).bind(tenant).bind(subject).fetch_all(p).await)?;
        let (mut plan, mut protocol) = (None, None);
        for (kind, id, version, body) in rows {
            let row = record_row(id, version);
            if kind == 0 {
                let place = self.place(tenant, PLANS.sealed_as, &row);
                let content = Plan::decode_str(body.0.get(), &place)?;
                plan = Some(Current {
                    id,
                    version,
                    content,
                });
            } else {
                let place = self.place(tenant, SAFETY_PROTOCOLS.sealed_as, &row);
                let content = SafetyProtocol::decode_str(body.0.get(), &place)?;
                protocol = Some(Current {
                    id,
                    version,
                    content,
                });
            }
        }
        Ok((plan, protocol))
    }
}

/// A subject's current record of one kind: its id, version and content.
#[derive(Debug, Clone)]
pub struct Current<T> {
    pub id: Uuid,
    pub version: i64,
    pub content: T,
}

impl<T> From<Record<T>> for Current<T> {
    fn from(r: Record<T>) -> Current<T> {
        Current {
            id: r.meta.id,
            version: r.meta.version,
            content: r.content,
        }
    }
}

impl<T: Clone> From<&Record<T>> for Current<T> {
    fn from(r: &Record<T>) -> Current<T> {
        Current {
            id: r.meta.id,
            version: r.meta.version,
            content: r.content.clone(),
        }
    }
}

fn current<T: Clone>(k: Known<T>) -> Option<Current<T>> {
    match k {
        Known::Record(r) => Some(Current::from(&*r)),
        Known::None | Known::Unknown => None,
    }
}
