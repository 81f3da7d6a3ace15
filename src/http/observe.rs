//! Request ids, Prometheus metrics and one log line per request. Routes are labelled by their
//! template (`/v1/plans/{id}`), never by the raw path or query, so no identifier or subject
//! reaches a metric or a log.

use crate::auth::RequestId;
use actix_web::body::MessageBody;
use actix_web::dev::Payload;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{ConnectionType, Method};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Instant;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();
static DROPPED_LOG_LINES: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

/// The binary's log writer counts the lines it had to drop (its buffer full); `/metrics` shows
/// the count as `telemental_log_lines_dropped_total`.
pub fn count_dropped_log_lines(counter: tracing_appender::non_blocking::ErrorCounter) {
    let _ = DROPPED_LOG_LINES.set(counter);
}

/// Lines the log writer has dropped so far (0 when logging does not go through it).
pub fn dropped_log_lines() -> u64 {
    DROPPED_LOG_LINES
        .get()
        .map_or(0, |c| c.dropped_lines() as u64)
}

/// The process-wide metrics recorder (installed once, shared by every app in the process).
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            )
            .expect("static buckets are valid");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed by an embedding program: keep ours local.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// A request id from the client is kept when it is short and plain, so ids can be correlated
/// across systems without letting a client inject log content.
fn usable_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_string())
}

/// The method as a metric label: the standard methods, else `other` (actix accepts any token
/// as a method, and a label per made-up method would grow the metrics without bound).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

pub async fn observe(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<HeldBody>, Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(usable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = method_label(req.method());
    // HEAD is GET without a body: route it as GET (the HTTP layer still knows the request was
    // HEAD and sends headers only), so every GET route answers HEAD too.
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    let personal = req.path().starts_with("/v1/") || req.path() == "/v1";
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    // Hold the request payload here as well as in the handler: if the handler answers an error
    // without reading it, the payload is still alive when the response is sent, and actix then
    // closes the connection instead of draining (a chunked body that never ends would hold the
    // connection for ever).
    let mut held = if has_body {
        let (http_req, payload) = req.into_parts();
        let held = Rc::new(RefCell::new(payload));
        let reader = held.clone();
        let stream = futures_util::stream::poll_fn(move |cx| {
            futures_util::StreamExt::poll_next_unpin(&mut *reader.borrow_mut(), cx)
        });
        let boxed: std::pin::Pin<
            Box<
                dyn futures_util::Stream<
                    Item = Result<actix_web::web::Bytes, actix_web::error::PayloadError>,
                >,
            >,
        > = Box::pin(stream);
        req = ServiceRequest::from_parts(http_req, Payload::from(boxed));
        Some(held)
    } else {
        None
    };
    let mut res = next.call(req).await?;
    // Only templates (a closed set) or one label for everything unmatched.
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    if has_body && status >= 400 {
        // The handler may have refused before reading the body (401, 415, 413 …): close the
        // connection after answering instead of reading whatever the client still sends.
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    } else {
        held = None;
    }
    if personal {
        // Anything under /v1 may carry personal data: no cache may keep it.
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let labels = [
        ("method", method.to_string()),
        ("route", route.clone()),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    let ms = elapsed.as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(%request_id, %method, %route, status, ms, "request");
    } else {
        tracing::info!(%request_id, %method, %route, status, ms, "request");
    }
    Ok(res.map_body(|_, body| HeldBody {
        inner: body.boxed(),
        _held: held,
    }))
}

/// A response body that keeps the request payload alive until the body has been sent (see
/// above): only then does actix decide between draining and closing.
pub struct HeldBody {
    inner: actix_web::body::BoxBody,
    _held: Option<Rc<RefCell<Payload>>>,
}

impl MessageBody for HeldBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> actix_web::body::BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<actix_web::web::Bytes, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_come_from_a_closed_set() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let made_up = Method::from_bytes(b"RT12345").unwrap();
        assert_eq!(method_label(&made_up), "other");
    }

    #[test]
    fn client_request_ids_are_kept_only_when_plain() {
        let ok = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(usable_request_id(&ok).as_deref(), Some("abc-123_x.y:z"));
        for bad in ["", "has space", "new\tline", "a/b", "é"] {
            if let Ok(v) = HeaderValue::from_str(bad) {
                assert_eq!(usable_request_id(&v), None, "{bad:?}");
            }
        }
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(usable_request_id(&long), None);
    }
}
