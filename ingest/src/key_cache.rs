//! The API-key cache, and what keeps it honest: a revoked key must get 401
//! from every ingest within 2 seconds.
//!
//! A trigger on `api_keys` announces every revoked, deleted or re-scoped key
//! on [`CHANGES_CHANNEL`]; each ingest LISTENs on a connection of its own and
//! drops its whole cache on any announcement (revocations are rare). The same
//! connection is pinged every [`PING_INTERVAL`]: PostgreSQL delivers a
//! notification committed before a query started ahead of that query's answer,
//! so once a ping is answered (and the announcements before it applied), every
//! revocation older than the ping has been seen. The cache is trusted only
//! while the last such ping is younger than [`TRUST_WINDOW`]; when the
//! listener is down or stuck, every request asks the database instead. So a
//! revoked key is refused after at most [`TRUST_WINDOW`] (plus a lookup),
//! even when notifications are lost.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::{FutureExt, StreamExt};
use shared::models::api_key::{Principal, CHANGES_CHANNEL};

/// How long a looked-up key is reused before the database is asked again
/// (which also records its use, see `last_used_at`).
const CACHE_TTL: Duration = Duration::from_secs(30);
/// How often the listener proves it is alive.
const PING_INTERVAL: Duration = Duration::from_millis(400);
/// How old the listener's last proof of life may be for the cache to be used.
pub const TRUST_WINDOW: Duration = Duration::from_millis(1500);
/// How the listener's connection shows in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "webhooks-ingest-key-listener";
/// Most entries kept; past it, expired ones are dropped.
const MAX_ENTRIES: usize = 10_000;

/// Token hash → the principal and when it was looked up.
type Entries = HashMap<Vec<u8>, (Principal, Instant)>;

/// Looked-up API keys, shared by every worker of one ingest.
#[derive(Clone, Default)]
pub struct KeyCache(Arc<Inner>);

#[derive(Default)]
struct Inner {
    entries: RwLock<Entries>,
    /// Bumped whenever the cache is dropped, so a lookup that began before
    /// a revocation cannot put the key back afterwards.
    generation: AtomicU64,
    /// When the listener last proved that every announcement before it was applied.
    confirmed_at: Mutex<Option<Instant>>,
}

/// A lookup in progress: remembers the generation it started in.
pub struct Lookup {
    generation: u64,
}

impl KeyCache {
    /// The cached principal of a token hash, if the cache may be trusted now.
    pub fn get(&self, hash: &[u8]) -> Option<Principal> {
        if !self.is_trusted() {
            return None;
        }
        let entries = self.0.entries.read().ok()?;
        entries.get(hash).filter(|(_, at)| at.elapsed() < CACHE_TTL).map(|(principal, _)| principal.clone())
    }

    /// Call before asking the database; pass the result to [`KeyCache::put`].
    pub fn begin_lookup(&self) -> Lookup {
        Lookup { generation: self.0.generation.load(Ordering::SeqCst) }
    }

    /// Caches what a lookup found, unless the cache was dropped meanwhile.
    pub fn put(&self, lookup: Lookup, hash: Vec<u8>, principal: Principal) {
        let Ok(mut entries) = self.0.entries.write() else { return };
        // Checked under the write lock, which `clear` takes too.
        if self.0.generation.load(Ordering::SeqCst) != lookup.generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        entries.insert(hash, (principal, Instant::now()));
    }

    /// Drops every entry (a key changed somewhere).
    pub fn clear(&self) {
        if let Ok(mut entries) = self.0.entries.write() {
            self.0.generation.fetch_add(1, Ordering::SeqCst);
            entries.clear();
        }
    }

    fn is_trusted(&self) -> bool {
        self.0.confirmed_at.lock().ok().and_then(|at| *at).is_some_and(|at| at.elapsed() < TRUST_WINDOW)
    }

    fn confirm(&self, at: Instant) {
        if let Ok(mut confirmed) = self.0.confirmed_at.lock() {
            *confirmed = Some(at);
        }
    }

    /// Starts the listener that keeps this cache honest (see the module docs);
    /// it ends when `stop` turns true.
    pub fn start_listener(
        &self,
        database_url: String,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let started = Instant::now();
                tokio::select! {
                    result = cache.listen(&database_url) => if let Err(err) = result {
                        log::warn!("API key change listener stopped; using no key cache until it is back error={err}");
                    },
                    _ = crate::publishing::stopped(&mut stop) => return,
                }
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(200);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = crate::publishing::stopped(&mut stop) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })
    }

    /// Listens until the connection fails.
    async fn listen(&self, database_url: &str) -> Result<(), diesel::result::Error> {
        use diesel_async::RunQueryDsl as _;
        let mut conn = tokio::time::timeout(Duration::from_secs(5), AsyncPgConnection::establish(database_url))
            .await
            .map_err(|_| connection_error("connecting timed out"))?
            .map_err(|e| connection_error(&e.to_string()))?;
        diesel::sql_query(format!("SET application_name = '{LISTENER_APPLICATION_NAME}'")).execute(&mut conn).await?;
        diesel::sql_query(format!("LISTEN {CHANGES_CHANNEL}")).execute(&mut conn).await?;
        // Announcements may have been missed while not listening.
        self.clear();
        loop {
            let ping_started = Instant::now();
            tokio::time::timeout(PING_INTERVAL * 2, diesel::sql_query("SELECT 1").execute(&mut conn))
                .await
                .map_err(|_| connection_error("ping timed out"))??;
            // Announcements committed before the ping arrived before its answer.
            {
                let mut notifications = std::pin::pin!(conn.notifications_stream());
                while let Some(Some(notification)) = notifications.next().now_or_never() {
                    self.announced(notification?.payload);
                }
            }
            self.confirm(ping_started);
            // Until the next ping, apply announcements as they come.
            let next_ping = tokio::time::sleep(PING_INTERVAL);
            tokio::pin!(next_ping);
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            loop {
                tokio::select! {
                    _ = &mut next_ping => break,
                    notification = notifications.next() => match notification {
                        Some(notification) => self.announced(notification?.payload),
                        None => return Err(connection_error("notification stream ended")),
                    },
                }
            }
        }
    }

    fn announced(&self, key_id: String) {
        self.clear();
        log::info!("API key changed; key cache dropped key_id={key_id}");
    }
}

fn connection_error(message: &str) -> diesel::result::Error {
    diesel::result::Error::DatabaseError(
        diesel::result::DatabaseErrorKind::ClosedConnection,
        Box::new(message.to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untrusted_cache_answers_nothing() {
        let cache = KeyCache::default();
        let lookup = cache.begin_lookup();
        cache.put(lookup, b"h".to_vec(), Principal::Publisher);
        assert_eq!(cache.get(b"h"), None, "never confirmed by a listener");
        cache.confirm(Instant::now());
        assert_eq!(cache.get(b"h"), Some(Principal::Publisher));
        cache.confirm(Instant::now() - TRUST_WINDOW);
        assert_eq!(cache.get(b"h"), None, "the listener's proof of life is too old");
    }

    #[test]
    fn a_lookup_that_began_before_a_drop_is_not_cached() {
        let cache = KeyCache::default();
        cache.confirm(Instant::now());
        let lookup = cache.begin_lookup();
        cache.clear();
        cache.put(lookup, b"h".to_vec(), Principal::Publisher);
        assert_eq!(cache.get(b"h"), None);
    }
}
