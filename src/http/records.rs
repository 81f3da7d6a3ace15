//! What every versioned resource shares: create, read, replace with `If-Match`, versions and
//! lists, each audited. A resource implements [`Resource`] and gets all of it.

use super::extract::{
    bad_cursor, decode_cursor, encode_cursor, etag, if_match, page_limit, parse_cursor, Input,
};
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::types::SubjectRef;
use crate::domain::FieldError;
use crate::error::ApiError;
use crate::store::{ListQuery, Record, RecordTable};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A versioned record type.
pub trait Resource: Input + Serialize + Clone {
    const TABLE: RecordTable;
    const READ: Scope;
    const WRITE: Scope;
    /// Collection path, e.g. `/v1/plans`.
    const PATH: &'static str;
    /// The response body.
    type View: Serialize;

    fn subject(&self) -> &SubjectRef;
    fn validate(self, today: NaiveDate) -> Result<Self, Vec<FieldError>>;
    fn review_due(&self) -> NaiveDate;
    fn view(meta: Meta, content: Self) -> Self::View;
}

/// Server-maintained fields of every versioned record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Meta {
    pub id: Uuid,
    /// 1 for the first version, incremented by every change; also the `ETag`.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    /// When this version was written.
    pub updated_at: DateTime<Utc>,
    /// Who wrote this version (the token's `sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// `limit` and `cursor` of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters of a plan or protocol list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordListParams {
    /// Only the record of this subject, e.g. `Patient/123`.
    pub subject: Option<String>,
    /// Only records whose `next_review_due` is before this date (`YYYY-MM-DD`), soonest first.
    #[param(value_type = Option<String>, format = Date)]
    pub review_due_before: Option<NaiveDate>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn to_view<R: Resource>(rec: Record) -> Result<R::View, ApiError> {
    let content: R = serde_json::from_value(rec.body.0).map_err(|e| {
        ApiError::internal(format!("stored {} row does not parse", R::TABLE.table), e)
    })?;
    Ok(R::view(
        Meta {
            id: rec.id,
            version: rec.version,
            created_at: rec.created_at.0,
            updated_at: rec.updated_at.0,
            updated_by: rec.updated_by,
        },
        content,
    ))
}

fn with_etag<R: Resource>(
    mut res: actix_web::HttpResponseBuilder,
    rec: Record,
) -> Result<HttpResponse, ApiError> {
    let version = rec.version;
    let view = to_view::<R>(rec)?;
    Ok(res.insert_header(etag(version)).json(view))
}

pub async fn create<R: Resource>(
    st: &AppState,
    caller: &Caller,
    input: R,
) -> Result<HttpResponse, ApiError> {
    st.require(caller, R::WRITE, R::TABLE.resource_type, "create")
        .await?;
    let input = input.validate(today()).map_err(ApiError::Invalid)?;
    let id = Uuid::now_v7();
    let subject = input.subject().as_str().to_string();
    let body = serde_json::to_value(&input)
        .map_err(|e| ApiError::internal("record does not serialise", e))?;
    let audit = st.audit_entry(
        caller,
        "create",
        R::TABLE.resource_type,
        Some(id),
        Some(&subject),
        "success",
    );
    match st
        .store
        .insert_record(
            R::TABLE,
            id,
            &caller.tenant,
            &subject,
            &body,
            input.review_due(),
            &audit,
        )
        .await
    {
        Ok(rec) => {
            let location = format!("{}/{}", R::PATH, rec.id);
            with_etag::<R>(
                HttpResponse::Created()
                    .insert_header((header::LOCATION, location))
                    .take(),
                rec,
            )
        }
        Err(crate::store::DbError::Conflict) => {
            let existing = st
                .store
                .get_record_by_subject(R::TABLE, &caller.tenant, &subject)
                .await?;
            Err(ApiError::Conflict {
                detail: format!(
                    "this subject already has a {}; update it with PUT",
                    R::TABLE.resource_type.replace('_', " ")
                ),
                existing_id: existing.map(|r| r.id.to_string()),
                allowed: None,
            })
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn read<R: Resource>(
    st: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<HttpResponse, ApiError> {
    st.require(caller, R::READ, R::TABLE.resource_type, "read")
        .await?;
    let rec = st.store.get_record(R::TABLE, &caller.tenant, id).await?;
    let Some(rec) = rec else {
        st.audit(
            caller,
            "read",
            R::TABLE.resource_type,
            Some(id),
            None,
            "not_found",
        )
        .await?;
        return Err(ApiError::NotFound);
    };
    st.audit(
        caller,
        "read",
        R::TABLE.resource_type,
        Some(id),
        Some(&rec.subject),
        "success",
    )
    .await?;
    with_etag::<R>(HttpResponse::Ok().take(), rec)
}

pub async fn replace<R: Resource>(
    st: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    id: Uuid,
    input: R,
) -> Result<HttpResponse, ApiError> {
    st.require(caller, R::WRITE, R::TABLE.resource_type, "update")
        .await?;
    let expected = if_match(req, true)?;
    let input = input.validate(today()).map_err(ApiError::Invalid)?;
    let body = serde_json::to_value(&input)
        .map_err(|e| ApiError::internal("record does not serialise", e))?;
    let subject = input.subject().as_str().to_string();
    let Some(current) = st.store.get_record(R::TABLE, &caller.tenant, id).await? else {
        st.audit(
            caller,
            "update",
            R::TABLE.resource_type,
            Some(id),
            None,
            "not_found",
        )
        .await?;
        return Err(ApiError::NotFound);
    };
    if current.subject != subject {
        return Err(ApiError::invalid(
            "subject",
            format!("cannot change: this record belongs to {}", current.subject),
        ));
    }
    let audit = st.audit_entry(
        caller,
        "update",
        R::TABLE.resource_type,
        Some(id),
        Some(&subject),
        "success",
    );
    let rec = st
        .store
        .update_record(
            R::TABLE,
            &caller.tenant,
            id,
            expected,
            &body,
            input.review_due(),
            &audit,
        )
        .await?;
    with_etag::<R>(HttpResponse::Ok().take(), rec)
}

/// A page of versions, newest first.
pub async fn versions<R: Resource>(
    st: &AppState,
    caller: &Caller,
    id: Uuid,
    page: PageParams,
) -> Result<(Vec<R::View>, Option<String>), ApiError> {
    st.require(caller, R::READ, R::TABLE.resource_type, "read_versions")
        .await?;
    let limit = page_limit(page.limit)?;
    let before = parse_cursor::<i64>(page.cursor.as_deref())?;
    let Some(rows) = st
        .store
        .list_versions(R::TABLE, &caller.tenant, id, before, limit + 1)
        .await?
    else {
        st.audit(
            caller,
            "read_versions",
            R::TABLE.resource_type,
            Some(id),
            None,
            "not_found",
        )
        .await?;
        return Err(ApiError::NotFound);
    };
    let subject = rows.first().map(|r| r.subject.clone());
    st.audit(
        caller,
        "read_versions",
        R::TABLE.resource_type,
        Some(id),
        subject.as_deref(),
        "success",
    )
    .await?;
    let (rows, next) = split_page(rows, limit, |r| r.version.to_string());
    let items = rows
        .into_iter()
        .map(to_view::<R>)
        .collect::<Result<_, _>>()?;
    Ok((items, next))
}

pub async fn list<R: Resource>(
    st: &AppState,
    caller: &Caller,
    params: RecordListParams,
) -> Result<(Vec<R::View>, Option<String>), ApiError> {
    st.require(caller, R::READ, R::TABLE.resource_type, "list")
        .await?;
    let limit = page_limit(params.limit)?;
    if let Some(s) = &params.subject {
        SubjectRef::parse(s).map_err(|m| ApiError::BadRequest(format!("subject {m}")))?;
    }
    let after = match &params.cursor {
        Some(c) => {
            let raw = decode_cursor(c)?;
            let bad = bad_cursor;
            let (d, id) = raw.split_once('|').ok_or_else(bad)?;
            Some((
                d.parse::<NaiveDate>().map_err(|_| bad())?,
                id.parse::<Uuid>().map_err(|_| bad())?,
            ))
        }
        None => None,
    };
    let q = ListQuery {
        subject: params.subject,
        review_due_before: params.review_due_before,
        after,
        limit: limit + 1,
    };
    let rows = st.store.list_records(R::TABLE, &caller.tenant, &q).await?;
    let (rows, next) = split_page(rows, limit, |r| format!("{}|{}", r.review_due, r.id));
    // Each record returned is a read of that service user's record.
    let entries: Vec<_> = rows
        .iter()
        .map(|r| {
            st.audit_entry(
                caller,
                "list",
                R::TABLE.resource_type,
                Some(r.id),
                Some(&r.subject),
                "success",
            )
        })
        .collect();
    st.store.audit(&entries).await?;
    let items = rows
        .into_iter()
        .map(to_view::<R>)
        .collect::<Result<_, _>>()?;
    Ok((items, next))
}

/// Cuts a `limit + 1` fetch to `limit` rows and makes the cursor from the last row kept.
pub fn split_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|r| encode_cursor(&key(r)))
    } else {
        None
    };
    (rows, next)
}

/// The subject's current record of this kind with its version (one indexed lookup).
pub async fn current<R: Resource>(
    st: &AppState,
    tenant: &str,
    subject: &str,
) -> Result<Option<(R, i64)>, ApiError> {
    let Some(rec) = st
        .store
        .get_record_by_subject(R::TABLE, tenant, subject)
        .await?
    else {
        return Ok(None);
    };
    let version = rec.version;
    let content: R = serde_json::from_value(rec.body.0).map_err(|e| {
        ApiError::internal(format!("stored {} row does not parse", R::TABLE.table), e)
    })?;
    Ok(Some((content, version)))
}
