//! Bearer-token authentication. Tokens are looked up by SHA-256 and the
//! result cached ([`crate::key_cache`]), so a busy publisher does not cost a
//! query per request, while a revoked key is refused within 2 seconds.

use std::{future::Future, pin::Pin};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use shared::models::api_key::{self, Principal};
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl Auth {
    /// The tenant a management route acts for; publisher keys manage nothing.
    pub fn tenant(&self) -> Result<&str, ApiError> {
        match &self.0 {
            Principal::Tenant(tenant) => Ok(tenant),
            Principal::Publisher => Err(ApiError::Forbidden(
                "publisher keys can only publish events; use a tenant key to manage webhooks".into(),
            )),
        }
    }
}

/// The caller of a tenant route: the tenant of a tenant API key. Extracting
/// it answers 401 without a valid key and 403 for a publisher key.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

impl FromRequest for Tenant {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let auth = Auth::from_request(req, payload);
        Box::pin(async move { Ok(Tenant(auth.await?.tenant()?.to_owned())) })
    }
}

/// A tenant route on one resource (`…/{id}`): the tenant, as [`Tenant`], and
/// the id from the path. A malformed id is simply not found (404).
#[derive(Debug, Clone)]
pub struct TenantScope {
    pub tenant_id: String,
    pub id: Uuid,
}

impl FromRequest for TenantScope {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let tenant = Tenant::from_request(req, payload);
        let id = req.match_info().get("id").map(Uuid::parse_str);
        Box::pin(async move {
            let Tenant(tenant_id) = tenant.await?;
            match id {
                Some(Ok(id)) => Ok(TenantScope { tenant_id, id }),
                _ => Err(ApiError::NotFound),
            }
        })
    }
}

fn bearer_token(req: &HttpRequest) -> Option<String> {
    let header = req.headers().get("Authorization")?.to_str().ok()?;
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 256).then(|| token.to_owned())
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let token = bearer_token(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let token = token.ok_or(ApiError::Unauthorized)?;
            let state = state.ok_or_else(|| ApiError::Internal("app state missing".into()))?;
            let hash = shared::crypto::hash_api_token(&token);
            if let Some(principal) = state.key_cache.get(&hash) {
                return Ok(Auth(principal));
            }
            let lookup = state.key_cache.begin_lookup();
            let mut conn = shared::db::conn(&state.pool).await?;
            let key = api_key::authenticate(&mut conn, &hash).await?.ok_or(ApiError::Unauthorized)?;
            let principal = key.principal().ok_or(ApiError::Unauthorized)?;
            state.key_cache.put(lookup, hash, principal.clone());
            Ok(Auth(principal))
        })
    }
}
