//! CORS for the EHR-facing scopes (`/cds-services`, `/fhir/R4`), each with its own allowed
//! origins: a preflight from an allowed origin is answered here, one from any other origin is
//! refused with the scope's own error, and responses to an allowed origin carry
//! `Access-Control-Allow-Origin`. Requests without `Origin` pass untouched.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::HttpResponse;

/// What a scope lets browsers do.
pub struct Policy {
    /// `Access-Control-Allow-Methods`.
    pub methods: &'static str,
    /// `Access-Control-Allow-Headers`.
    pub request_headers: &'static str,
    /// `Access-Control-Expose-Headers`: the response headers scripts may read.
    pub exposed_headers: &'static str,
}

/// Runs `next` under `policy` for the origins in `allowed`; `refuse` answers a preflight from
/// any other origin.
pub async fn apply(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    allowed: &[String],
    policy: &Policy,
    refuse: impl FnOnce() -> HttpResponse,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let permitted = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| allowed.iter().any(|a| a == o))
        .map(str::to_owned);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let res = match &permitted {
            Some(o) => HttpResponse::NoContent()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, o.as_str()))
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, policy.methods))
                .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, policy.request_headers))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
                .insert_header((header::VARY, "Origin"))
                .finish(),
            None => refuse(),
        };
        return Ok(req.into_response(res).map_into_right_body());
    }
    let mut res = next.call(req).await?;
    if let Some(o) = permitted {
        if let Ok(v) = HeaderValue::from_str(&o) {
            let h = res.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(policy.exposed_headers),
            );
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    Ok(res.map_into_left_body())
}
