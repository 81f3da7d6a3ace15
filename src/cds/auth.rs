//! How EHRs authenticate to the CDS Hooks endpoints: an asymmetric JWT (RS256, RS384, ES256,
//! ES384) signed with a key from the configured JWKS, `aud` the configured audience or the
//! endpoint's own URL, `tenant` the organisation, and a `jti` never accepted twice within the
//! token's lifetime, across every instance on the database. Browser clients get CORS.

use super::CdsSettings;
use crate::auth::{Authenticator, RequestId};
use crate::error::ApiError;
use crate::http::{cors, AppState};
use crate::store::writer::{SeenToken, Writer};
use crate::store::{on_db, AuditEntry, DbResult, Store, Ts};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use std::sync::atomic::Ordering;

/// The algorithms CDS Hooks clients may sign with.
pub const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::ES256,
    Algorithm::ES384,
];
/// Tokens living longer than this are refused: every accepted `jti` is kept until its token
/// expires, and CDS Hooks tokens are meant to be short-lived (minutes).
pub const MAX_LIFETIME_SECS: u64 = 3600;
/// The clock leeway of the verification; a `jti` is kept this much past `exp` too.
const LEEWAY_SECS: i64 = 30;
/// Expired `jti`s are pruned at most this often per instance.
const PRUNE_EVERY_SECS: i64 = 60;

/// An EHR whose token verified. Its `jti` is recorded (and a replay refused) by
/// [`CdsCaller::commit`], together with the call's audit entries, before a handler answers.
#[derive(Debug, Clone)]
pub struct CdsCaller {
    pub tenant: String,
    /// `sub` when the token has one, else `iss`: the audit actor.
    pub actor: String,
    pub request_id: String,
    token: SeenToken,
}

impl CdsCaller {
    /// Records the token's `jti` and the audit entries in one (group) commit; 401 when the
    /// token was already used.
    pub async fn commit(&self, writer: &Writer, audit: Vec<AuditEntry>) -> Result<(), ApiError> {
        if writer.record(Some(self.token.clone()), audit).await? {
            Ok(())
        } else {
            Err(ApiError::Unauthorized(
                "this token was already used (jti replay); sign a new one per call".into(),
            ))
        }
    }
}

impl FromRequest for CdsCaller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let auth = req.app_data::<web::Data<Authenticator>>().cloned();
        let cfg = req.app_data::<web::Data<CdsSettings>>().cloned();
        let st = req.app_data::<web::Data<AppState>>().cloned();
        let header = req
            .headers()
            .get_all(header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned))
            .collect::<Vec<_>>();
        let path = req.path().to_string();
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        Box::pin(async move {
            let (Some(auth), Some(cfg), Some(st)) = (auth, cfg, st) else {
                return Err(ApiError::internal(
                    "authenticating an EHR",
                    "no authenticator or CDS settings in the app data",
                ));
            };
            let token = bearer(&header)?;
            let mut audiences = vec![cfg.audience.clone()];
            if let Some(base) = &cfg.public_url {
                audiences.push(format!("{base}{path}"));
            }
            let claims = auth
                .verify_external(&token, &audiences, &cfg.issuers, &ALGORITHMS)
                .await?;
            let checked = check_claims(&claims, jsonwebtoken::get_current_timestamp())?;
            prune_now_and_then(&st.store, &cfg);
            Ok(CdsCaller {
                tenant: checked.tenant,
                actor: checked.actor,
                request_id,
                token: SeenToken {
                    issuer: checked.issuer,
                    jti: checked.jti,
                    keep_until: checked.keep_until,
                },
            })
        })
    }
}

fn bearer(headers: &[Result<String, header::ToStrError>]) -> Result<String, ApiError> {
    let unauthorized = |m: &str| ApiError::Unauthorized(m.to_string());
    let h = match headers {
        [] => return Err(unauthorized("missing bearer token")),
        [Ok(h)] => h,
        [Err(_)] => return Err(unauthorized("malformed Authorization header")),
        _ => return Err(unauthorized("send one Authorization header")),
    };
    match h.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            Ok(t.trim().to_string())
        }
        _ => Err(unauthorized("Authorization must be 'Bearer <token>'")),
    }
}

/// The claims of a verified CDS token that the service relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedClaims {
    pub tenant: String,
    pub issuer: String,
    pub jti: String,
    pub actor: String,
    /// When the `jti` may be forgotten: `exp` plus the leeway.
    pub keep_until: Ts,
}

/// `iss`, `jti` and `tenant` present and plain, `exp` within [`MAX_LIFETIME_SECS`] of `now`.
pub fn check_claims(
    c: &serde_json::Map<String, Value>,
    now: u64,
) -> Result<CheckedClaims, ApiError> {
    let unauthorized = |m: &str| ApiError::Unauthorized(m.to_string());
    let text = |name: &str, max: usize| {
        c.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= max)
            .map(str::to_owned)
    };
    let issuer = text("iss", 512).ok_or_else(|| unauthorized("the token lacks an iss claim"))?;
    let jti = text("jti", 255)
        .ok_or_else(|| unauthorized("the token lacks a jti claim (1 to 255 characters)"))?;
    let tenant = text("tenant", 128)
        .ok_or_else(|| unauthorized("the token lacks a tenant claim (the organisation)"))?;
    let exp = c
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or_else(|| unauthorized("the token lacks a numeric exp claim"))?;
    if exp > now + MAX_LIFETIME_SECS {
        return Err(unauthorized(
            "the token lives too long: exp may be at most one hour ahead",
        ));
    }
    let actor = text("sub", 256).unwrap_or_else(|| issuer.clone());
    let keep_until = chrono::DateTime::from_timestamp(exp as i64 + LEEWAY_SECS, 0)
        .map(Ts::from)
        .ok_or_else(|| unauthorized("the token's exp is out of range"))?;
    Ok(CheckedClaims {
        tenant,
        issuer,
        jti,
        actor,
        keep_until,
    })
}

/// Deletes expired `jti`s; returns how many.
pub async fn prune_jtis(store: &Store, now: Ts) -> DbResult<u64> {
    const SQL: &str = "DELETE FROM cds_seen_tokens WHERE expires_at < $1";
    let n = on_db!(&store.db, p => sqlx::query(SQL).bind(now).execute(p).await?.rows_affected());
    Ok(n)
}

/// Prunes in the background, at most once a minute per instance, off the request's path.
fn prune_now_and_then(store: &Store, cfg: &CdsSettings) {
    let now = chrono::Utc::now().timestamp();
    let last = cfg.last_prune.load(Ordering::Relaxed);
    if now - last < PRUNE_EVERY_SECS
        || cfg
            .last_prune
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let store = store.clone();
    actix_web::rt::spawn(async move {
        if let Err(e) = prune_jtis(&store, Ts::now()).await {
            tracing::warn!(error = %e, "could not prune expired CDS token ids");
        }
    });
}

/// CORS for browser-based CDS clients (`TELEMENTAL_CDS_ALLOWED_ORIGINS`): see
/// `crate::http::cors`.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    const POLICY: cors::Policy = cors::Policy {
        methods: "GET, POST, OPTIONS",
        request_headers: "Authorization, Content-Type, X-Request-Id",
        exposed_headers: "X-Request-Id",
    };
    let allowed = req
        .app_data::<web::Data<CdsSettings>>()
        .map(|c| c.allowed_origins.clone())
        .unwrap_or_default();
    cors::apply(req, next, &allowed, &POLICY, || {
        ApiError::Forbidden(
            "this origin may not call the CDS service (TELEMENTAL_CDS_ALLOWED_ORIGINS)".into(),
        )
        .error_response()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn cds_claims_need_iss_jti_tenant_and_a_short_life() {
        let now = 1_800_000_000;
        let good = json!({"iss": "https://ehr.example", "jti": "a1", "tenant": "t1",
                          "exp": now + 300, "aud": "x"});
        let c = check_claims(&claims(good.clone()), now).unwrap();
        assert_eq!(c.tenant, "t1");
        assert_eq!(c.actor, "https://ehr.example");
        assert_eq!(c.keep_until.0.timestamp(), (now + 300 + 30) as i64);
        let mut with_sub = good.clone();
        with_sub["sub"] = json!("ehr-client-1");
        assert_eq!(
            check_claims(&claims(with_sub), now).unwrap().actor,
            "ehr-client-1"
        );
        for (field, value) in [
            ("jti", Value::Null),
            ("jti", json!("")),
            ("jti", json!("x".repeat(256))),
            ("tenant", Value::Null),
            ("tenant", json!(7)),
            ("iss", Value::Null),
            ("exp", json!(now + 3601)),
            ("exp", json!("soon")),
        ] {
            let mut c = good.clone();
            if value.is_null() {
                c.as_object_mut().unwrap().remove(field);
            } else {
                c[field] = value.clone();
            }
            assert!(check_claims(&claims(c), now).is_err(), "{field} = {value}");
        }
    }

    #[test]
    fn one_bearer_header_is_required() {
        assert_eq!(bearer(&[Ok("Bearer abc".into())]).unwrap(), "abc");
        assert!(bearer(&[]).is_err());
        assert!(bearer(&[Ok("Basic abc".into())]).is_err());
        assert!(bearer(&[Ok("Bearer a".into()), Ok("Bearer b".into())]).is_err());
    }
}
