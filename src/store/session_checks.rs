//! Session checks and their disconnections: written once, never changed.

use super::audit::insert_audit;
use super::forms::session_check::DisconnectionForm;
use super::forms::StoredForm;
use super::outbox::emit_event;
use super::{change, on_db, AuditEntry, DbResult, Store, Ts};
use crate::domain::session_check::{SessionCheck, SessionCheckOutcome};
use crate::domain::types::ShortNote;
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

/// What the sealed fields of a check's columns are bound to (with the check's id).
pub(crate) const CHECK_SEALED_AS: &str = "session_checks.body";
pub(crate) const RESULT_SEALED_AS: &str = "session_checks.result";
/// A disconnection's note (with the disconnection's id).
pub(crate) const DISCONNECTION_SEALED_AS: &str = "session_disconnections.body";

#[derive(sqlx::FromRow)]
struct CheckRow {
    id: Uuid,
    subject: String,
    body: Json<Box<RawValue>>,
    result: Json<Box<RawValue>>,
    protocol_version: Option<i64>,
    plan_version: Option<i64>,
    created_at: Ts,
    created_by: String,
    disconnections: i64,
}

/// A recorded session check: what was confirmed, the outcome given at the time, and the
/// versions of the records it was computed from.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub id: Uuid,
    pub subject: String,
    pub check: SessionCheck,
    pub result: SessionCheckOutcome,
    pub protocol_version: Option<i64>,
    pub plan_version: Option<i64>,
    pub created_at: Ts,
    pub created_by: String,
    pub disconnections: i64,
}

pub struct NewCheck<'a> {
    pub id: Uuid,
    pub tenant: &'a str,
    pub check: &'a SessionCheck,
    pub result: &'a SessionCheckOutcome,
    pub protocol_version: Option<i64>,
    pub plan_version: Option<i64>,
}

impl Store {
    /// Stores a check; `event` is the payload of `session_check.do_not_proceed`, when due.
    pub async fn insert_session_check(
        &self,
        c: &NewCheck<'_>,
        audit: &AuditEntry,
        event: Option<&Value>,
    ) -> DbResult<()> {
        const SQL: &str =
            "INSERT INTO session_checks (id, tenant, subject, body, outcome, result, \
            protocol_version, plan_version, created_at, created_by) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        let row = c.id.to_string();
        let body = c
            .check
            .encode(&self.place(c.tenant, CHECK_SEALED_AS, &row))?;
        let result = c
            .result
            .encode(&self.place(c.tenant, RESULT_SEALED_AS, &row))?;
        let outcome = c.result.outcome.as_str();
        let (id, protocol_version, plan_version, at) =
            (c.id, c.protocol_version, c.plan_version, audit.at);
        let (tenant, subject, actor, event, store) = (
            c.tenant.to_string(),
            c.check.subject.as_str().to_string(),
            audit.actor.clone(),
            event.cloned(),
            self.clone(),
        );
        change!(self, audit, c, sp => {
            sqlx::query(&sp.sql(SQL))
                .bind(id)
                .bind(&tenant)
                .bind(&subject)
                .bind(Json(&body))
                .bind(outcome)
                .bind(Json(&result))
                .bind(protocol_version)
                .bind(plan_version)
                .bind(at)
                .bind(&actor)
                .execute(&mut *c)
                .await?;
            if let Some(data) = &event {
                emit_event!(
                    &store,
                    c,
                    &tenant,
                    crate::events::WebhookEvent::SessionCheckDoNotProceed,
                    data,
                    at
                )?;
            }
            Ok::<_, super::DbError>(())
        })
    }

    pub async fn get_session_check(&self, tenant: &str, id: Uuid) -> DbResult<Option<CheckRecord>> {
        const SQL: &str = "SELECT c.id, c.subject, c.body, c.result, c.protocol_version, \
            c.plan_version, c.created_at, c.created_by, \
            (SELECT COUNT(*) FROM session_disconnections d WHERE d.session_check_id = c.id) \
            AS disconnections FROM session_checks c WHERE c.id = $1 AND c.tenant = $2";
        let row = on_db!(&self.db, p => sqlx::query_as::<_, CheckRow>(SQL)
            .bind(id)
            .bind(tenant)
            .fetch_optional(p)
            .await)?;
        let Some(r) = row else { return Ok(None) };
        let sealed_row = r.id.to_string();
        let (check_at, result_at) = (
            self.place(tenant, CHECK_SEALED_AS, &sealed_row),
            self.place(tenant, RESULT_SEALED_AS, &sealed_row),
        );
        Ok(Some(CheckRecord {
            check: SessionCheck::decode_str(r.body.0.get(), &check_at)?,
            result: SessionCheckOutcome::decode_str(r.result.0.get(), &result_at)?,
            id: r.id,
            subject: r.subject,
            protocol_version: r.protocol_version,
            plan_version: r.plan_version,
            created_at: r.created_at,
            created_by: r.created_by,
            disconnections: r.disconnections,
        }))
    }

    /// Records a disconnection; returns how many the session has had, this one included.
    pub async fn add_disconnection(
        &self,
        tenant: &str,
        check_id: Uuid,
        note: Option<&ShortNote>,
        audit: &AuditEntry,
    ) -> DbResult<i64> {
        let id = Uuid::now_v7();
        let sealed_row = id.to_string();
        let body = DisconnectionForm::encode(
            note,
            &self.place(tenant, DISCONNECTION_SEALED_AS, &sealed_row),
        )?;
        const INSERT: &str = "INSERT INTO session_disconnections \
            (id, tenant, session_check_id, occurred_at, recorded_by, body) \
            VALUES ($1, $2, $3, $4, $5, $6)";
        const COUNT: &str =
            "SELECT COUNT(*) FROM session_disconnections WHERE session_check_id = $1 AND tenant = $2";
        let n = on_db!(&self.db, p => {
            let _turn = self.write_turn().await;
            let mut tx = p.begin().await?;
            sqlx::query(INSERT)
                .bind(id)
                .bind(tenant)
                .bind(check_id)
                .bind(audit.at)
                .bind(&audit.actor)
                .bind(Json(&body))
                .execute(&mut *tx)
                .await?;
            let (n,): (i64,) = sqlx::query_as(COUNT).bind(check_id).bind(tenant).fetch_one(&mut *tx).await?;
            insert_audit!(&mut *tx, audit)?;
            tx.commit().await?;
            n
        });
        self.durable().await?;
        Ok(n)
    }
}
