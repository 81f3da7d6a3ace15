//! `GET /v1/reports/equity`: aggregate counts per tenant and period with small numbers
//! suppressed, as JSON or CSV; and the recommendation counter that feeds it.

use super::extract::QueryParams;
use super::records::today;
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::report::{assemble, EquityReport, Granularity, ReportRange};
use crate::error::ApiError;
use crate::store::Ts;
use actix_web::http::header::{self, Accept, Header};
use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

const RESOURCE: &str = "equity_report";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EquityParams {
    /// The first day (`YYYY-MM-DD`), widened to the start of its week or month. Default:
    /// eleven periods before the period of `to`.
    #[param(value_type = Option<String>, format = Date, example = "2026-01-01")]
    pub from: Option<String>,
    /// The last day (`YYYY-MM-DD`), widened to the end of its week or month. Default: today
    /// (UTC). At most 53 weeks or 36 months from `from`.
    #[param(value_type = Option<String>, format = Date, example = "2026-12-31")]
    pub to: Option<String>,
    /// `week` (ISO, Monday to Sunday) or `month` (default).
    #[param(value_type = Option<Granularity>)]
    pub granularity: Option<String>,
}

crate::errors!(GetEquityReportErrors: 400, 401, 403, 422, 500, 503);

/// Equity and safety report: exclusion, modalities, session checks and referral timeliness.
///
/// For the caller's tenant only. `totals` covers the whole range, except `plans` (a snapshot
/// of the current plans) and the two `overdue` counts (now); each period counts what happened
/// in it. Small-number suppression: a count from 1 to `suppression_threshold − 1` reads
/// `"<5"` (with the threshold), and wherever such a count could be worked out by subtraction
/// from the other counts (of its group, its period, the other periods or the totals), another
/// count is withheld as `null`. Shares and percentiles resting on fewer records than the
/// threshold are `null`. Nothing in the report identifies a person.
///
/// With `Accept: text/csv` the same report comes as CSV: `period,group,category,value`, one
/// row per period (`total` for the totals) and category; an empty value is withheld.
#[utoipa::path(
    tag = "reports",
    operation_id = "getEquityReport",
    params(EquityParams),
    responses(
        (status = 200, description = "The report", content(
            (EquityReport = "application/json"),
            (String = "text/csv", example = "period,group,category,value\ntotal,plans.by_exclusion_level,none,120\ntotal,plans.by_exclusion_level,at_risk,<5\n")
        )),
        GetEquityReportErrors,
    ),
    security(("bearer" = ["reports:read"]))
)]
#[get("/reports/equity")]
pub async fn equity_report(
    st: web::Data<AppState>,
    caller: Caller,
    q: QueryParams<EquityParams>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::ReportsRead, RESOURCE, "read")
        .await?;
    let q = q.parse()?;
    let range = ReportRange::parse(
        q.from.as_deref(),
        q.to.as_deref(),
        q.granularity.as_deref(),
        today(),
    )
    .map_err(ApiError::Invalid)?;
    let now = Ts::now();
    let raw = st.store.equity_counts(&caller.tenant, &range, now).await?;
    st.audit(&caller, "read", RESOURCE, None, None, "success")
        .await?;
    let report = assemble(&range, &raw, u64::from(st.report_suppression), now.0);
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::VARY, "Accept"));
    if wants_csv(&req) {
        let name = format!(
            "equity-report-{}-{}-{}.csv",
            report.from,
            report.to,
            report.granularity.as_str()
        );
        Ok(res
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ))
            .body(to_csv(&report)))
    } else {
        Ok(res.json(report))
    }
}

/// Whether the client ranks `text/csv` above JSON.
fn wants_csv(req: &HttpRequest) -> bool {
    let Ok(accept) = Accept::parse(req) else {
        return false;
    };
    for mime in accept.ranked() {
        match (mime.type_().as_str(), mime.subtype().as_str()) {
            ("text", "csv") => return true,
            ("application", "json") | ("application", "*") | ("*", "*") => return false,
            _ => {}
        }
    }
    false
}

/// `period,group,category,value`: one row per period (`total` first) and category.
pub fn to_csv(report: &EquityReport) -> String {
    let mut out = String::from("period,group,category,value\n");
    let mut rows = |period: &str, groups: &Value| {
        let mut leaves = Vec::new();
        flatten(groups, String::new(), &mut leaves);
        for (group, category, value) in leaves {
            out.push_str(&format!("{period},{group},{category},{value}\n"));
        }
    };
    let as_json =
        |v: &crate::domain::report::ReportGroups| serde_json::to_value(v).unwrap_or(Value::Null);
    rows("total", &as_json(&report.totals));
    for p in &report.periods {
        rows(&p.start.to_string(), &as_json(&p.groups));
    }
    out
}

/// The leaves of a group object: (path of the parent, key, value as text; empty for null).
fn flatten(v: &Value, path: String, out: &mut Vec<(String, String, String)>) {
    let Value::Object(map) = v else { return };
    for (key, value) in map {
        match value {
            Value::Object(_) => {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                flatten(value, p, out);
            }
            Value::Null => out.push((path.clone(), key.clone(), String::new())),
            Value::String(s) => out.push((path.clone(), key.clone(), s.clone())),
            other => out.push((path.clone(), key.clone(), other.to_string())),
        }
    }
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(equity_report);
}
