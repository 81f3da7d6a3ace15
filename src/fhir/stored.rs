//! The records the interoperability views show, read through the store as domain values.

use super::mapping::{self, CarePlanKind, RecordMeta};
use crate::domain::plan::Plan;
use crate::domain::protocol::SafetyProtocol;
use crate::store::{DbResult, ListQuery, Record, RecordKind, RecordTable, Store};
use serde_json::Value;
use uuid::Uuid;

/// A record shown as a CarePlan: a preference plan or a safety protocol.
pub enum CarePlanRecord {
    Plan(Record<Plan>),
    Protocol(Record<SafetyProtocol>),
}

impl CarePlanRecord {
    fn meta(&self) -> &crate::store::RecordMeta {
        match self {
            CarePlanRecord::Plan(r) => &r.meta,
            CarePlanRecord::Protocol(r) => &r.meta,
        }
    }

    pub fn id(&self) -> Uuid {
        self.meta().id
    }

    pub fn subject(&self) -> &str {
        &self.meta().subject
    }

    pub fn version(&self) -> i64 {
        self.meta().version
    }

    pub fn updated_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.meta().updated_at.0
    }

    pub fn table(&self) -> RecordTable {
        match self {
            CarePlanRecord::Plan(_) => Plan::TABLE,
            CarePlanRecord::Protocol(_) => SafetyProtocol::TABLE,
        }
    }

    /// The record as a FHIR CarePlan.
    pub fn to_fhir(&self) -> Value {
        match self {
            CarePlanRecord::Plan(r) => mapping::plan_care_plan(&r.content, &meta(&r.meta)),
            CarePlanRecord::Protocol(r) => mapping::protocol_care_plan(&r.content, &meta(&r.meta)),
        }
    }
}

/// The mapping's view of a record's metadata.
pub fn meta(m: &crate::store::RecordMeta) -> RecordMeta {
    RecordMeta {
        id: m.id,
        version: m.version,
        created_at: m.created_at.0,
        updated_at: m.updated_at.0,
    }
}

/// The record of this kind with this id, if the tenant has one.
pub async fn get(
    store: &Store,
    kind: CarePlanKind,
    tenant: &str,
    id: Uuid,
) -> DbResult<Option<CarePlanRecord>> {
    Ok(match kind {
        CarePlanKind::PreferencePlan => store
            .get_record::<Plan>(tenant, id)
            .await?
            .map(CarePlanRecord::Plan),
        CarePlanKind::SafetyProtocol => store
            .get_record::<SafetyProtocol>(tenant, id)
            .await?
            .map(CarePlanRecord::Protocol),
    })
}

/// The records of this kind that match `q`.
pub async fn list(
    store: &Store,
    kind: CarePlanKind,
    tenant: &str,
    q: &ListQuery,
) -> DbResult<Vec<CarePlanRecord>> {
    Ok(match kind {
        CarePlanKind::PreferencePlan => store
            .list_records::<Plan>(tenant, q)
            .await?
            .into_iter()
            .map(CarePlanRecord::Plan)
            .collect(),
        CarePlanKind::SafetyProtocol => store
            .list_records::<SafetyProtocol>(tenant, q)
            .await?
            .into_iter()
            .map(CarePlanRecord::Protocol)
            .collect(),
    })
}

/// Versions of the record of this kind with this id, newest first, below `before_version` when
/// given; `None` when the tenant has no such record.
pub async fn versions(
    store: &Store,
    kind: CarePlanKind,
    tenant: &str,
    id: Uuid,
    before_version: Option<i64>,
    limit: i64,
) -> DbResult<Option<Vec<CarePlanRecord>>> {
    Ok(match kind {
        CarePlanKind::PreferencePlan => store
            .list_versions::<Plan>(tenant, id, before_version, limit)
            .await?
            .map(|v| v.into_iter().map(CarePlanRecord::Plan).collect()),
        CarePlanKind::SafetyProtocol => store
            .list_versions::<SafetyProtocol>(tenant, id, before_version, limit)
            .await?
            .map(|v| v.into_iter().map(CarePlanRecord::Protocol).collect()),
    })
}
