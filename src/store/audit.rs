//! The append-only audit trail.

use super::{on_db, DbResult, Store, Ts};
use serde::Serialize;
use uuid::Uuid;

/// One audited access, written in the same transaction as the change it records (writes) or
/// before the data is returned (reads).
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub tenant: String,
    pub actor: String,
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: Option<Uuid>,
    pub subject: Option<String>,
    pub request_id: String,
    pub outcome: &'static str,
    pub at: Ts,
}

pub(crate) const INSERT_AUDIT: &str = "INSERT INTO audit_events \
    (id, tenant, at, actor, action, resource_type, resource_id, subject, request_id, outcome) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Inserts an [`AuditEntry`] with any executor (a pool or an open transaction).
macro_rules! insert_audit {
    ($exec:expr, $e:expr) => {{
        let e: &$crate::store::AuditEntry = $e;
        sqlx::query($crate::store::audit::INSERT_AUDIT)
            .bind(uuid::Uuid::now_v7())
            .bind(&e.tenant)
            .bind(e.at)
            .bind(&e.actor)
            .bind(e.action)
            .bind(e.resource_type)
            .bind(e.resource_id)
            .bind(&e.subject)
            .bind(&e.request_id)
            .bind(e.outcome)
            .execute($exec)
            .await
    }};
}
pub(crate) use insert_audit;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: Uuid,
    pub at: Ts,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub subject: Option<String>,
    pub request_id: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub subject: Option<String>,
    pub resource_type: Option<String>,
    pub since: Option<Ts>,
    pub after: Option<Uuid>,
    pub limit: i64,
}

impl Store {
    /// Records entries in one transaction: all or none.
    pub async fn audit(&self, entries: &[AuditEntry]) -> DbResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        on_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            for e in entries {
                insert_audit!(&mut *tx, e)?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Oldest first, so a consumer can follow the trail with the cursor.
    pub async fn list_audit(&self, tenant: &str, f: &AuditFilter) -> DbResult<Vec<AuditRow>> {
        const SQL: &str = "SELECT id, at, actor, action, resource_type, resource_id, subject, \
            request_id, outcome FROM audit_events \
            WHERE tenant = $1 AND ($2 IS NULL OR subject = $2) \
            AND ($3 IS NULL OR resource_type = $3) AND ($4 IS NULL OR at >= $4) \
            AND ($5 IS NULL OR id > $5) ORDER BY id LIMIT $6";
        let rows = on_db!(&self.db, p => sqlx::query_as::<_, AuditRow>(SQL)
            .bind(tenant)
            .bind(&f.subject)
            .bind(&f.resource_type)
            .bind(f.since)
            .bind(f.after)
            .bind(f.limit)
            .fetch_all(p)
            .await)?;
        Ok(rows)
    }
}
