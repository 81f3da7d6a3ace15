//! The encryption keys and the stored data: the canary `/readyz` checks, and `telemental
//! rekey`, which rewrites every sealed (or still clear) value under the current key.
//!
//! `rekey` works online, in bounded batches: each batch is read, resealed in memory and written
//! in one short transaction, each row only if its column still holds what was read (a row the
//! service changed meanwhile already has a new value, sealed by the service). It needs no
//! bookkeeping to resume: rows already under the current key are read and left alone. It
//! repeats until a whole pass rewrites nothing, so the key ids it reports from that pass are
//! exactly those still in use.

use super::forms::session_check::DisconnectionForm;
use super::forms::{format_of, StoredForm, FIRST_SEALED_FORMAT};
use super::{on_db, record_row, DbError, DbResult, Store, Ts};
use crate::crypto::{key_id_of, CryptoError, Place};
use crate::domain::plan::Plan;
use crate::domain::protocol::SafetyProtocol;
use crate::domain::referral::ReferralState;
use crate::domain::session_check::{SessionCheck, SessionCheckOutcome};
use serde_json::Value;
use sqlx::types::Json;
use std::collections::BTreeMap;
use uuid::Uuid;

const CANARY: &str = "telemental encryption canary";
const CANARY_AT: &str = "encryption_canaries.sealed";

impl Store {
    /// Writes the current key's canary if it has none yet (start-up).
    pub async fn ensure_canary(&self) -> DbResult<()> {
        let Some(id) = self.keys().current_id() else {
            return Ok(());
        };
        let sealed = self.place("", CANARY_AT, id).seal_text(CANARY)?;
        on_db!(&self.db, p => sqlx::query(
            "INSERT INTO encryption_canaries (key_id, sealed, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id) DO NOTHING")
            .bind(id).bind(&sealed).bind(Ts::now()).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Whether the keys can read what they wrote: every configured key opens its canary, and
    /// no stored value has named a key that is not configured. `Err` says what is wrong (key
    /// ids only).
    pub async fn check_keys(&self) -> DbResult<Result<(), String>> {
        let unknown = self.keys().unknown_seen();
        if !unknown.is_empty() {
            return Ok(Err(format!(
                "stored values need key id(s) {} which are not configured",
                unknown.join(", ")
            )));
        }
        let rows: Vec<(String, String)> = on_db!(&self.db, p =>
            sqlx::query_as("SELECT key_id, sealed FROM encryption_canaries").fetch_all(p).await)?;
        for (id, sealed) in rows {
            if !self.keys().has(&id) {
                continue;
            }
            match self.place("", CANARY_AT, &id).open_text(&sealed) {
                Ok(t) if t == CANARY => {}
                _ => {
                    return Ok(Err(format!(
                        "key id `{id}` does not open its canary: its key bytes changed"
                    )))
                }
            }
        }
        Ok(Ok(()))
    }
}

impl Store {
    /// After `rekey` on SQLite: copies the WAL into the file and empties it, so that old
    /// frames holding the values as they were before are gone (the pages themselves were
    /// rewritten with `secure_delete`). PostgreSQL leaves old row versions to VACUUM.
    pub async fn flush_old_values(&self) -> DbResult<()> {
        if let super::Db::Sqlite(p) = &self.db {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(p)
                .await?;
        }
        Ok(())
    }
}

/// What `rekey` did to one column of one table.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ColumnReport {
    pub rows: u64,
    pub rewritten: u64,
    /// Rows whose value does not open (a missing key, or corruption): left as they are.
    pub failed: u64,
    /// Key ids of the values as they stand after this pass, with their row counts (`clear`
    /// for values not yet sealed).
    pub keys: BTreeMap<String, u64>,
}

/// How one column's values are resealed.
#[derive(Clone, Copy)]
enum Form {
    Plan,
    Protocol,
    Referral,
    Check,
    Outcome,
    Disconnection,
    /// A whole JSON value (outbox payloads, replayed responses).
    Whole,
    /// A text column (webhook secrets).
    Text,
}

/// How a table's rows are keyed.
#[derive(Clone, Copy)]
enum Keying {
    /// `id`, a record with a `version` column: bound to `<id>@<version>`.
    Record,
    /// `record_id` and `version`: bound to `<record_id>@<version>`.
    Version,
    /// `id`: bound to the id.
    Id,
    /// `(tenant, endpoint, key)`: bound to `<endpoint> <key>`.
    IdemKey,
}

/// One column to rekey.
pub struct Column {
    pub name: &'static str,
    table: &'static str,
    column: &'static str,
    sealed_as: &'static str,
    keying: Keying,
    form: Form,
}

const fn col(
    name: &'static str,
    table: &'static str,
    column: &'static str,
    sealed_as: &'static str,
    keying: Keying,
    form: Form,
) -> Column {
    Column {
        name,
        table,
        column,
        sealed_as,
        keying,
        form,
    }
}

/// Every column that holds sealed values.
pub const COLUMNS: &[Column] = &[
    col(
        "plans",
        "plans",
        "body",
        "plans.body",
        Keying::Record,
        Form::Plan,
    ),
    col(
        "plan_versions",
        "plan_versions",
        "body",
        "plans.body",
        Keying::Version,
        Form::Plan,
    ),
    col(
        "safety_protocols",
        "safety_protocols",
        "body",
        "safety_protocols.body",
        Keying::Record,
        Form::Protocol,
    ),
    col(
        "safety_protocol_versions",
        "safety_protocol_versions",
        "body",
        "safety_protocols.body",
        Keying::Version,
        Form::Protocol,
    ),
    col(
        "referrals",
        "referrals",
        "body",
        "referrals.body",
        Keying::Record,
        Form::Referral,
    ),
    col(
        "referral_versions",
        "referral_versions",
        "body",
        "referrals.body",
        Keying::Version,
        Form::Referral,
    ),
    col(
        "session_checks.body",
        "session_checks",
        "body",
        super::session_checks::CHECK_SEALED_AS,
        Keying::Id,
        Form::Check,
    ),
    col(
        "session_checks.result",
        "session_checks",
        "result",
        super::session_checks::RESULT_SEALED_AS,
        Keying::Id,
        Form::Outcome,
    ),
    col(
        "session_disconnections",
        "session_disconnections",
        "body",
        super::session_checks::DISCONNECTION_SEALED_AS,
        Keying::Id,
        Form::Disconnection,
    ),
    col(
        "idempotency_keys",
        "idempotency_keys",
        "response",
        super::referrals::RESPONSE_SEALED_AS,
        Keying::IdemKey,
        Form::Whole,
    ),
    col(
        "outbox_events",
        "outbox_events",
        "payload",
        "outbox_events.payload",
        Keying::Id,
        Form::Whole,
    ),
    col(
        "webhooks",
        "webhooks",
        "secret",
        "webhooks.secret",
        Keying::Id,
        Form::Text,
    ),
];

/// A row as read: its key, tenant and value.
struct Row {
    id: Option<Uuid>,
    version: i64,
    text_key: (String, String),
    tenant: String,
    value: Value,
}

impl Row {
    fn sealed_row(&self, keying: Keying) -> String {
        match keying {
            Keying::Record | Keying::Version => {
                record_row(self.id.unwrap_or_default(), self.version)
            }
            Keying::Id => self.id.unwrap_or_default().to_string(),
            Keying::IdemKey => format!("{} {}", self.text_key.0, self.text_key.1),
        }
    }
}

/// The key ids a value uses (`clear` when nothing in it is sealed).
fn key_ids(form: Form, v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let paths: &[&str] = match form {
        Form::Plan => Plan::SEALED,
        Form::Protocol => SafetyProtocol::SEALED,
        Form::Referral => ReferralState::SEALED,
        Form::Check => SessionCheck::SEALED,
        Form::Outcome => SessionCheckOutcome::SEALED,
        Form::Disconnection => DisconnectionForm::SEALED,
        Form::Whole | Form::Text => {
            if let Some(id) = v.as_str().and_then(key_id_of) {
                out.push(id.to_string());
            }
            return if out.is_empty() {
                vec!["clear".into()]
            } else {
                out
            };
        }
    };
    if format_of(v) < FIRST_SEALED_FORMAT {
        return vec!["clear".into()];
    }
    Place::key_ids(&mut v.clone(), paths, &mut out);
    out
}

fn needs_rewrite(form: Form, v: &Value, current: &str) -> bool {
    match form {
        // An outbox payload or replay that is not a sealed string is clear.
        Form::Whole | Form::Text => v.as_str().and_then(key_id_of) != Some(current),
        // A form of an older format is rewritten even with nothing to seal in it, so that
        // every row ends at the newest format.
        _ => format_of(v) < FIRST_SEALED_FORMAT || key_ids(form, v).iter().any(|k| k != current),
    }
}

fn reform<T: StoredForm>(v: Value, place: &Place<'_>) -> Result<Value, DbError> {
    Ok(T::decode(v, place)?.encode(place)?)
}

/// The value resealed under the current key.
fn reseal(form: Form, v: Value, place: &Place<'_>) -> Result<Value, DbError> {
    match form {
        Form::Plan => reform::<Plan>(v, place),
        Form::Protocol => reform::<SafetyProtocol>(v, place),
        Form::Referral => reform::<ReferralState>(v, place),
        Form::Check => reform::<SessionCheck>(v, place),
        Form::Outcome => reform::<SessionCheckOutcome>(v, place),
        Form::Disconnection => {
            let mut v = v;
            if format_of(&v) >= FIRST_SEALED_FORMAT {
                place.open_fields(&mut v, DisconnectionForm::SEALED)?;
            }
            if let Some(m) = v.as_object_mut() {
                m.insert("format".into(), Value::from(DisconnectionForm::FORMAT));
            }
            place.seal_fields(&mut v, DisconnectionForm::SEALED)?;
            Ok(v)
        }
        Form::Whole => Ok(place.seal_value(&place.open_value(v)?)?),
        Form::Text => {
            let clear = place.open_text(v.as_str().unwrap_or_default())?;
            Ok(Value::String(place.seal_text(&clear)?))
        }
    }
}

impl Store {
    /// One pass of `rekey` over one column, `batch` rows per transaction; `progress` is told
    /// after each batch.
    pub async fn rekey_column(
        &self,
        c: &Column,
        batch: i64,
        mut progress: impl FnMut(&ColumnReport),
    ) -> DbResult<ColumnReport> {
        let current = self
            .keys()
            .current_id()
            .ok_or(DbError::Crypto(CryptoError::NoKey))?
            .to_string();
        let (t, col) = (c.table, c.column);
        let (select, update) = match c.keying {
            Keying::Record => (
                format!("SELECT id, version, tenant, {col} FROM {t} WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"),
                // A record changed meanwhile has a new version (and a body the service sealed).
                format!("UPDATE {t} SET {col} = $1 WHERE id = $2 AND version = $3"),
            ),
            Keying::Version => (
                format!("SELECT record_id, version, tenant, {col} FROM {t} WHERE ($1 IS NULL OR record_id > $1 OR (record_id = $1 AND version > $3)) ORDER BY record_id, version LIMIT $2"),
                // Versions, checks, events, secrets and kept responses are written once.
                format!("UPDATE {t} SET {col} = $1 WHERE record_id = $2 AND version = $3"),
            ),
            Keying::Id => (
                format!("SELECT id, CAST(0 AS BIGINT) AS version, tenant, {col} FROM {t} WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"),
                format!("UPDATE {t} SET {col} = $1 WHERE id = $2"),
            ),
            Keying::IdemKey => (
                format!("SELECT tenant, endpoint, key, {col} FROM {t} WHERE {col} IS NOT NULL AND (tenant, endpoint, key) > ($1, $2, $3) ORDER BY tenant, endpoint, key LIMIT $4"),
                format!("UPDATE {t} SET {col} = $1 WHERE tenant = $2 AND endpoint = $3 AND key = $4"),
            ),
        };
        let text = matches!(c.form, Form::Text);
        let mut report = ColumnReport::default();
        let mut after: Option<Row> = None;
        loop {
            let rows = self
                .rekey_batch(c, &select, text, after.as_ref(), batch)
                .await?;
            let Some(last) = rows.last() else { break };
            after = Some(Row {
                id: last.id,
                version: last.version,
                text_key: last.text_key.clone(),
                tenant: last.tenant.clone(),
                value: Value::Null,
            });
            let n = rows.len() as i64;
            let mut writes: Vec<(Row, Value)> = Vec::new();
            for row in rows {
                report.rows += 1;
                if !needs_rewrite(c.form, &row.value, &current) {
                    for k in key_ids(c.form, &row.value) {
                        *report.keys.entry(k).or_default() += 1;
                    }
                    continue;
                }
                let sealed_row = row.sealed_row(c.keying);
                let place = self.place(&row.tenant, c.sealed_as, &sealed_row);
                match reseal(c.form, row.value.clone(), &place) {
                    Ok(v) => writes.push((row, v)),
                    Err(e) => {
                        report.failed += 1;
                        tracing::error!(table = c.name, tenant = %row.tenant, row = %sealed_row,
                            key_id = e.crypto().and_then(CryptoError::key_id), error = %e,
                            "rekey: a stored value does not open; left as it is");
                        for k in key_ids(c.form, &row.value) {
                            *report.keys.entry(k).or_default() += 1;
                        }
                    }
                }
            }
            report.rewritten += self.rekey_write(c, &update, text, &writes).await?;
            // A record changed meanwhile was sealed by the service (the next pass sees it).
            for (_, new) in &writes {
                for k in key_ids(c.form, new) {
                    *report.keys.entry(k).or_default() += 1;
                }
            }
            progress(&report);
            if n < batch {
                break;
            }
        }
        Ok(report)
    }

    async fn rekey_batch(
        &self,
        c: &Column,
        select: &str,
        text: bool,
        after: Option<&Row>,
        batch: i64,
    ) -> DbResult<Vec<Row>> {
        let value_of = |s: Option<String>, j: Option<Json<Value>>| match (s, j) {
            (Some(s), _) => Value::String(s),
            (_, Some(j)) => j.0,
            _ => Value::Null,
        };
        let rows = match c.keying {
            Keying::IdemKey => {
                let (t, e, k) = match after {
                    Some(r) => (r.tenant.clone(), r.text_key.0.clone(), r.text_key.1.clone()),
                    None => (String::new(), String::new(), String::new()),
                };
                let rows: Vec<(String, String, String, Json<Value>)> = on_db!(&self.db, p =>
                    sqlx::query_as(select).bind(&t).bind(&e).bind(&k).bind(batch).fetch_all(p).await)?;
                rows.into_iter()
                    .map(|(tenant, endpoint, key, v)| Row {
                        id: None,
                        version: 0,
                        text_key: (endpoint, key),
                        tenant,
                        value: v.0,
                    })
                    .collect()
            }
            _ => {
                let id = after.and_then(|r| r.id);
                let version = after.map(|r| r.version).unwrap_or(0);
                let versioned = matches!(c.keying, Keying::Version);
                if text {
                    let rows: Vec<(Uuid, i64, String, String)> = on_db!(&self.db, p => {
                        let q = sqlx::query_as(select).bind(id).bind(batch);
                        let q = if versioned { q.bind(version) } else { q };
                        q.fetch_all(p).await
                    })?;
                    rows.into_iter()
                        .map(|(id, version, tenant, v)| Row {
                            id: Some(id),
                            version,
                            text_key: Default::default(),
                            tenant,
                            value: value_of(Some(v), None),
                        })
                        .collect()
                } else {
                    let rows: Vec<(Uuid, i64, String, Json<Value>)> = on_db!(&self.db, p => {
                        let q = sqlx::query_as(select).bind(id).bind(batch);
                        let q = if versioned { q.bind(version) } else { q };
                        q.fetch_all(p).await
                    })?;
                    rows.into_iter()
                        .map(|(id, version, tenant, v)| Row {
                            id: Some(id),
                            version,
                            text_key: Default::default(),
                            tenant,
                            value: value_of(None, Some(v)),
                        })
                        .collect()
                }
            }
        };
        Ok(rows)
    }

    /// Writes one batch in one transaction; returns how many rows still held what was read.
    async fn rekey_write(
        &self,
        c: &Column,
        update: &str,
        text: bool,
        writes: &[(Row, Value)],
    ) -> DbResult<u64> {
        if writes.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        let sqlite = matches!(self.db, super::Db::Sqlite(_));
        on_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            if sqlite {
                // The old value's bytes are zeroed, not left in the page's free space.
                sqlx::query("PRAGMA secure_delete = ON").execute(&mut *tx).await?;
            }
            for (row, new) in writes {
                let q = sqlx::query(update);
                let q = if text {
                    q.bind(new.as_str().unwrap_or_default().to_string())
                } else {
                    q.bind(Json(new.clone()))
                };
                let q = match c.keying {
                    Keying::IdemKey => q.bind(row.tenant.clone()).bind(row.text_key.0.clone()).bind(row.text_key.1.clone()),
                    Keying::Id => q.bind(row.id),
                    Keying::Record | Keying::Version => q.bind(row.id).bind(row.version),
                };
                n += q.execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        self.durable().await?;
        Ok(n)
    }
}
