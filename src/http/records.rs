//! What every versioned resource shares: create, read, replace with `If-Match`, versions and
//! lists, each audited. A resource implements [`Resource`] and gets all of it.

use super::extract::{
    bad_cursor, decode_cursor, encode_cursor, etag, if_match, page_limit, parse_cursor, Input,
};
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::types::{CalendarDate, SubjectRef};
use crate::domain::FieldError;
use crate::error::ApiError;
use crate::store::{ListQuery, Record, RecordKind, RecordMeta};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A versioned resource of the API.
pub trait Resource {
    /// The domain record (checked content).
    type Kind: RecordKind;
    /// What a client sends.
    type Request: Input;
    /// What a client gets back.
    type View: Serialize;
    const READ: Scope;
    const WRITE: Scope;
    /// Collection path, e.g. `/v1/plans`.
    const PATH: &'static str;

    fn check(request: Self::Request, today: NaiveDate) -> Result<Self::Kind, Vec<FieldError>>;
    fn view(record: Record<Self::Kind>) -> Self::View;
}

/// Server-maintained fields of every versioned record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Meta {
    pub id: Uuid,
    /// 1 for the first version, incremented by every change; also the `ETag`.
    #[schema(minimum = 1)]
    pub version: i64,
    pub created_at: DateTime<Utc>,
    /// When this version was written.
    pub updated_at: DateTime<Utc>,
    /// Who wrote this version (the token's `sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub updated_by: Option<String>,
}

impl From<RecordMeta> for Meta {
    fn from(m: RecordMeta) -> Meta {
        Meta {
            id: m.id,
            version: m.version,
            created_at: m.created_at.0,
            updated_at: m.updated_at.0,
            updated_by: m.updated_by,
        }
    }
}

/// A field the server sets. It may be sent back in a request, so that a record read from the
/// API can be replaced as it was read, and is then ignored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Ignored)
    }
}

impl utoipa::PartialSchema for Ignored {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .description(Some(
                "Set by the server. Accepted in requests so that a record read from the API can \
                 be sent back as it is, and ignored.",
            ))
            .into()
    }
}
impl ToSchema for Ignored {}

/// `limit` and `cursor` of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

/// Filters of a plan or protocol list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordListParams {
    /// Only the record of this subject, e.g. `Patient/123`.
    pub subject: Option<SubjectRef>,
    /// Only records whose `next_review_due` is before this date (`YYYY-MM-DD`), soonest first.
    pub review_due_before: Option<CalendarDate>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn respond<R: Resource>(
    mut res: actix_web::HttpResponseBuilder,
    rec: Record<R::Kind>,
) -> HttpResponse {
    res.insert_header(etag(rec.meta.version)).json(R::view(rec))
}

pub async fn create<R: Resource>(
    st: &AppState,
    caller: &Caller,
    body: super::extract::ValidJson<R::Request>,
) -> Result<HttpResponse, ApiError> {
    let resource_type = R::Kind::TABLE.resource_type;
    st.require(caller, R::WRITE, resource_type, "create")
        .await?;
    let record = R::check(body.parse()?, today()).map_err(ApiError::Invalid)?;
    let id = Uuid::now_v7();
    let subject = record.subject().to_string();
    let audit = st.audit_entry(
        caller,
        "create",
        resource_type,
        Some(id),
        Some(&subject),
        "success",
    );
    match st
        .store
        .insert_record(id, &caller.tenant, record, &audit)
        .await
    {
        Ok(rec) => {
            let location = format!("{}/{}", R::PATH, rec.meta.id);
            Ok(respond::<R>(
                HttpResponse::Created()
                    .insert_header((header::LOCATION, location))
                    .take(),
                rec,
            ))
        }
        Err(crate::store::DbError::Conflict) => {
            let existing = st
                .store
                .record_id_by_subject(R::Kind::TABLE, &caller.tenant, &subject)
                .await?;
            Err(ApiError::Conflict {
                detail: format!(
                    "this subject already has a {}; update it with PUT",
                    resource_type.replace('_', " ")
                ),
                existing_id: existing.map(|id| id.to_string()),
                allowed: None,
            })
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn read<R: Resource>(
    st: &AppState,
    caller: &Caller,
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let resource_type = R::Kind::TABLE.resource_type;
    st.require(caller, R::READ, resource_type, "read").await?;
    let id = super::extract::path_id(req, "id")?;
    let rec = st.store.get_record::<R::Kind>(&caller.tenant, id).await?;
    let Some(rec) = rec else {
        st.audit(caller, "read", resource_type, Some(id), None, "not_found")
            .await?;
        return Err(ApiError::NotFound);
    };
    st.audit(
        caller,
        "read",
        resource_type,
        Some(id),
        Some(&rec.meta.subject),
        "success",
    )
    .await?;
    Ok(respond::<R>(HttpResponse::Ok().take(), rec))
}

pub async fn replace<R: Resource>(
    st: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    body: super::extract::ValidJson<R::Request>,
) -> Result<HttpResponse, ApiError> {
    let resource_type = R::Kind::TABLE.resource_type;
    st.require(caller, R::WRITE, resource_type, "update")
        .await?;
    let expected = if_match(req, true)?;
    let body = body.parse()?;
    let id = super::extract::path_id(req, "id")?;
    let record = R::check(body, today()).map_err(ApiError::Invalid)?;
    let subject = record.subject().to_string();
    let Some(current) = st.store.get_record::<R::Kind>(&caller.tenant, id).await? else {
        st.audit(caller, "update", resource_type, Some(id), None, "not_found")
            .await?;
        return Err(ApiError::NotFound);
    };
    if current.meta.subject != subject {
        return Err(ApiError::invalid(
            "subject",
            format!(
                "cannot change: this record belongs to {}",
                current.meta.subject
            ),
        ));
    }
    let audit = st.audit_entry(
        caller,
        "update",
        resource_type,
        Some(id),
        Some(&subject),
        "success",
    );
    let rec = st
        .store
        .update_record(&caller.tenant, id, expected, record, &audit)
        .await?;
    Ok(respond::<R>(HttpResponse::Ok().take(), rec))
}

/// A page of versions, newest first.
pub async fn versions<R: Resource>(
    st: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    page: super::extract::QueryParams<PageParams>,
) -> Result<(Vec<R::View>, Option<String>), ApiError> {
    let resource_type = R::Kind::TABLE.resource_type;
    st.require(caller, R::READ, resource_type, "read_versions")
        .await?;
    let page = page.parse()?;
    let limit = page_limit(page.limit)?;
    let before = parse_cursor::<i64>(page.cursor.as_deref())?;
    let id = super::extract::path_id(req, "id")?;
    let Some(rows) = st
        .store
        .list_versions::<R::Kind>(&caller.tenant, id, before, limit + 1)
        .await?
    else {
        st.audit(
            caller,
            "read_versions",
            resource_type,
            Some(id),
            None,
            "not_found",
        )
        .await?;
        return Err(ApiError::NotFound);
    };
    let subject = rows.first().map(|r| r.meta.subject.clone());
    st.audit(
        caller,
        "read_versions",
        resource_type,
        Some(id),
        subject.as_deref(),
        "success",
    )
    .await?;
    let (rows, next) = split_page(rows, limit, |r| r.meta.version.to_string());
    Ok((rows.into_iter().map(R::view).collect(), next))
}

pub async fn list<R: Resource>(
    st: &AppState,
    caller: &Caller,
    params: super::extract::QueryParams<RecordListParams>,
) -> Result<(Vec<R::View>, Option<String>), ApiError> {
    let resource_type = R::Kind::TABLE.resource_type;
    st.require(caller, R::READ, resource_type, "list").await?;
    let params = params.parse()?;
    let limit = page_limit(params.limit)?;
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
        subject: params.subject.map(String::from),
        review_due_before: params.review_due_before.map(CalendarDate::get),
        after,
        limit: limit + 1,
    };
    let rows = st.store.list_records::<R::Kind>(&caller.tenant, &q).await?;
    let (rows, next) = split_page(rows, limit, |r| format!("{}|{}", r.review_due, r.meta.id));
    // Each record returned is a read of that service user's record.
    let entries: Vec<_> = rows
        .iter()
        .map(|r| {
            st.audit_entry(
                caller,
                "list",
                resource_type,
                Some(r.meta.id),
                Some(&r.meta.subject),
                "success",
            )
        })
        .collect();
    st.writer.record(None, entries).await?;
    Ok((rows.into_iter().map(R::view).collect(), next))
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
pub async fn current<K: RecordKind>(
    st: &AppState,
    tenant: &str,
    subject: &str,
) -> Result<Option<(K, i64)>, ApiError> {
    Ok(st
        .store
        .get_record_by_subject::<K>(tenant, subject)
        .await?
        .map(|r| (r.content, r.meta.version)))
}
