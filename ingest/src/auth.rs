//! Bearer-token authentication. Tokens are looked up by SHA-256 and the
//! result cached briefly, so a busy publisher does not cost a query per request.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use shared::models::api_key::{self, Principal};
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

/// How long a looked-up token is trusted without asking the database again.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// Token hash → principal, with the time it was looked up.
#[derive(Clone, Default)]
pub struct AuthCache(Arc<RwLock<CachedPrincipals>>);

/// Token hash → the principal and when it was looked up.
type CachedPrincipals = HashMap<Vec<u8>, (Principal, Instant)>;

impl AuthCache {
    fn get(&self, hash: &[u8]) -> Option<Principal> {
        let map = self.0.read().ok()?;
        map.get(hash).filter(|(_, at)| at.elapsed() < CACHE_TTL).map(|(p, _)| p.clone())
    }

    fn put(&self, hash: Vec<u8>, principal: Principal) {
        if let Ok(mut map) = self.0.write() {
            if map.len() > 10_000 {
                map.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            }
            map.insert(hash, (principal, Instant::now()));
        }
    }
}

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
            if let Some(principal) = state.auth_cache.get(&hash) {
                return Ok(Auth(principal));
            }
            let mut conn = shared::db::conn(&state.pool).await?;
            let key = api_key::find_by_token(&mut conn, &token).await?.ok_or(ApiError::Unauthorized)?;
            let principal = key.principal().ok_or(ApiError::Unauthorized)?;
            state.auth_cache.put(hash, principal.clone());
            Ok(Auth(principal))
        })
    }
}
