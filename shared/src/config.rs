//! Typed configuration from the environment, validated once at start.
//!
//! Every variable is documented in the README. Secrets are never printed:
//! [`SecretKey`] has no `Debug` that shows its bytes.

use std::{env, net::SocketAddr, time::Duration};

use base64::Engine;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required: {hint}")]
    Missing { name: &'static str, hint: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// The 32-byte key that encrypts signing secrets at rest.
#[derive(Clone)]
pub struct SecretKey(pub [u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// Parses base64 of exactly 32 bytes.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid { name: "WEBHOOK_SECRET_KEY", reason: reason.to_owned() };
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(value.trim()).map_err(|_| invalid("not base64"))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| invalid("must decode to exactly 32 bytes"))?;
        Ok(Self(key))
    }
}

/// Which kind of RabbitMQ queue to declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Single-node classic queues (the default).
    Classic,
    /// Replicated quorum queues, for clustered brokers.
    Quorum,
}

/// Settings shared by ingest and the dispatcher. Its `Debug` hides the
/// passwords in `database_url` and `amqp_url` and the secret key.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub database_pool_size: usize,
    pub amqp_url: String,
    pub amqp_prefix: String,
    pub amqp_queue_type: QueueType,
    pub ingest_bind: SocketAddr,
    pub dispatcher_bind: SocketAddr,
    pub secret_key: SecretKey,
    /// Delay before retry 1, 2, 3…; retries past the list reuse the last one.
    pub retry_schedule: Vec<Duration>,
    pub allow_http_targets: bool,
    pub allow_private_targets: bool,
    /// Deliveries the dispatcher attempts at once.
    pub dispatcher_concurrency: usize,
    /// Deliveries to one subscription the dispatcher attempts at once.
    pub dispatcher_per_subscription: usize,
    /// Dispatch messages one dispatcher holds unacked: those in flight and
    /// those waiting here for a slot (the consumer's prefetch).
    pub dispatcher_prefetch: u16,
    /// The longest a message waits in a dispatcher for a slot before its
    /// delivery is parked in the database and queued again.
    pub dispatcher_max_slot_wait: Duration,
    /// Published AMQP events ingest processes at once (the consumer's prefetch).
    pub ingest_prefetch: u16,
    /// How often the outbox relay looks for deliveries the broker never confirmed.
    pub outbox_interval: Duration,
    /// How old an unqueued delivery must be before the relay takes it over from
    /// the publisher that created it (which normally queues it within milliseconds).
    pub outbox_grace: Duration,
    /// Deliveries a recover or bulk-retry job queues per step.
    pub recovery_batch_size: usize,
    /// Pause between a job's steps, so a large recovery leaves room for live traffic.
    pub recovery_batch_pause: Duration,
    /// Consecutive failed attempts that open a subscription's circuit.
    pub circuit_failure_threshold: i32,
    /// The first open period of a circuit; it doubles per failed probe.
    pub circuit_open_base: Duration,
    /// The longest open period.
    pub circuit_open_max: Duration,
    /// Each retry delay varies uniformly within ± this fraction (0 = exact).
    pub retry_jitter: f64,
    /// Cap on a 429/503 `Retry-After`.
    pub retry_after_max: Duration,
    /// A subscription whose every attempt failed for this long is disabled.
    pub auto_disable_after: Duration,
    /// How often the reconciler looks for unfinished deliveries whose message was lost.
    pub reconcile_interval: Duration,
    /// How long past due an unfinished delivery must be before the reconciler
    /// queues it again (whatever its `enqueued` flag says).
    pub reconcile_grace: Duration,
    /// Events older than this are deleted with their deliveries and attempts
    /// (`RETENTION`; `None` = keep everything).
    pub retention: Option<Duration>,
    /// Publish body bytes ingest holds at once, HTTP and AMQP together.
    pub ingest_max_inflight_bytes: usize,
    /// How long a request body may take to arrive.
    pub ingest_body_timeout: Duration,
    /// A subscription with a queued delivery due for longer than this is
    /// behind, and HTTP publishes to it are answered late (`None`: never).
    pub ingest_backpressure_lag: Option<Duration>,
    /// The longest a publish answer is held for a subscription behind.
    pub ingest_backpressure_max_wait: Duration,
}

/// `DATABASE_URL` when unset.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/webhooks";

/// `DATABASE_URL` alone, for commands that only touch the database
/// (`migrate`, `api-key`): they need no `WEBHOOK_SECRET_KEY`.
pub fn database_url_from_env() -> String {
    env::var("DATABASE_URL").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

impl Config {
    /// Reads and validates every variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| env::var(name).ok())
    }

    /// Reads from any lookup function (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str, default: &str| get(name).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned());
        let secret = get("WEBHOOK_SECRET_KEY").filter(|v| !v.is_empty()).ok_or(ConfigError::Missing {
            name: "WEBHOOK_SECRET_KEY",
            hint: "32 random bytes, base64 (e.g. `openssl rand -base64 32`)",
        })?;
        let prefix = var("AMQP_PREFIX", "webhooks");
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err(ConfigError::Invalid {
                name: "AMQP_PREFIX",
                reason: "use letters, digits, '_', '-' and '.'".into(),
            });
        }
        let amqp_url = var("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        if split_urls(&amqp_url).is_empty() {
            return Err(ConfigError::Invalid { name: "AMQP_URL", reason: "no URL given".into() });
        }
        Ok(Self {
            database_url: var("DATABASE_URL", DEFAULT_DATABASE_URL),
            database_pool_size: parse_number("DATABASE_POOL_SIZE", &var("DATABASE_POOL_SIZE", "16"), 1, 1000)?,
            amqp_url,
            amqp_prefix: prefix,
            amqp_queue_type: match var("AMQP_QUEUE_TYPE", "classic").as_str() {
                "classic" => QueueType::Classic,
                "quorum" => QueueType::Quorum,
                other => {
                    return Err(ConfigError::Invalid {
                        name: "AMQP_QUEUE_TYPE",
                        reason: format!("{other:?} is neither classic nor quorum"),
                    })
                }
            },
            ingest_bind: parse_addr("INGEST_BIND", &var("INGEST_BIND", "127.0.0.1:8080"))?,
            dispatcher_bind: parse_addr("DISPATCHER_BIND", &var("DISPATCHER_BIND", "127.0.0.1:9091"))?,
            secret_key: SecretKey::parse(&secret)?,
            retry_schedule: parse_schedule(&var("RETRY_SCHEDULE", "5m,1h,6h"))?,
            allow_http_targets: parse_bool("ALLOW_HTTP_TARGETS", &var("ALLOW_HTTP_TARGETS", "false"))?,
            allow_private_targets: parse_bool("ALLOW_PRIVATE_TARGETS", &var("ALLOW_PRIVATE_TARGETS", "false"))?,
            dispatcher_concurrency: parse_number(
                "DISPATCHER_CONCURRENCY",
                &var("DISPATCHER_CONCURRENCY", "256"),
                1,
                10_000,
            )?,
            dispatcher_per_subscription: parse_number(
                "DISPATCHER_PER_SUBSCRIPTION",
                &var("DISPATCHER_PER_SUBSCRIPTION", "128"),
                1,
                10_000,
            )?,
            dispatcher_prefetch: parse_number(
                "DISPATCHER_PREFETCH",
                &var("DISPATCHER_PREFETCH", "20000"),
                1,
                usize::from(u16::MAX),
            )? as u16,
            dispatcher_max_slot_wait: parse_duration(
                "DISPATCHER_MAX_SLOT_WAIT",
                &var("DISPATCHER_MAX_SLOT_WAIT", "5m"),
            )?,
            ingest_prefetch: parse_number("INGEST_PREFETCH", &var("INGEST_PREFETCH", "64"), 1, 10_000)? as u16,
            outbox_interval: Duration::from_millis(parse_number(
                "OUTBOX_INTERVAL_MS",
                &var("OUTBOX_INTERVAL_MS", "1000"),
                10,
                3_600_000,
            )? as u64),
            outbox_grace: Duration::from_millis(parse_number(
                "OUTBOX_GRACE_MS",
                &var("OUTBOX_GRACE_MS", "5000"),
                0,
                86_400_000,
            )? as u64),
            recovery_batch_size: parse_number("RECOVERY_BATCH_SIZE", &var("RECOVERY_BATCH_SIZE", "100"), 1, 10_000)?,
            recovery_batch_pause: Duration::from_millis(parse_number(
                "RECOVERY_BATCH_PAUSE_MS",
                &var("RECOVERY_BATCH_PAUSE_MS", "100"),
                0,
                5_000,
            )? as u64),
            circuit_failure_threshold: parse_number(
                "CIRCUIT_FAILURE_THRESHOLD",
                &var("CIRCUIT_FAILURE_THRESHOLD", "5"),
                1,
                10_000,
            )? as i32,
            circuit_open_base: parse_duration("CIRCUIT_OPEN_BASE", &var("CIRCUIT_OPEN_BASE", "30s"))?,
            circuit_open_max: parse_duration("CIRCUIT_OPEN_MAX", &var("CIRCUIT_OPEN_MAX", "1h"))?,
            retry_jitter: parse_fraction("RETRY_JITTER", &var("RETRY_JITTER", "0.2"))?,
            retry_after_max: parse_duration("RETRY_AFTER_MAX", &var("RETRY_AFTER_MAX", "1h"))?,
            auto_disable_after: parse_duration("AUTO_DISABLE_AFTER", &var("AUTO_DISABLE_AFTER", "5d"))?,
            reconcile_interval: parse_duration("RECONCILE_INTERVAL", &var("RECONCILE_INTERVAL", "30s"))?,
            reconcile_grace: parse_duration("RECONCILE_GRACE", &var("RECONCILE_GRACE", "10m"))?,
            retention: parse_duration_or_off("RETENTION", &var("RETENTION", "30d"))?,
            ingest_max_inflight_bytes: parse_number(
                "INGEST_MAX_INFLIGHT_BYTES",
                &var("INGEST_MAX_INFLIGHT_BYTES", "8388608"),
                MIN_INFLIGHT_BYTES,
                1 << 40,
            )?,
            ingest_body_timeout: parse_duration("INGEST_BODY_TIMEOUT", &var("INGEST_BODY_TIMEOUT", "10s"))?,
            ingest_backpressure_lag: parse_duration_or_off(
                "INGEST_BACKPRESSURE_LAG",
                &var("INGEST_BACKPRESSURE_LAG", "100ms"),
            )?,
            ingest_backpressure_max_wait: parse_duration(
                "INGEST_BACKPRESSURE_MAX_WAIT",
                &var("INGEST_BACKPRESSURE_MAX_WAIT", "1s"),
            )?,
        })
    }

    /// The broker URLs of `AMQP_URL` (comma-separated nodes of one cluster), in order.
    pub fn amqp_urls(&self) -> Vec<String> {
        split_urls(&self.amqp_url)
    }

    /// The delay before retry number `retry` (1-based); past the list, its last entry.
    pub fn retry_delay(&self, retry: u32) -> Duration {
        let index = (retry.max(1) as usize - 1).min(self.retry_schedule.len() - 1);
        self.retry_schedule[index]
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured without `..`: a new field cannot be added without deciding here how it prints.
        let Self {
            database_url,
            database_pool_size,
            amqp_url,
            amqp_prefix,
            amqp_queue_type,
            ingest_bind,
            dispatcher_bind,
            secret_key,
            retry_schedule,
            allow_http_targets,
            allow_private_targets,
            dispatcher_concurrency,
            dispatcher_per_subscription,
            dispatcher_prefetch,
            dispatcher_max_slot_wait,
            ingest_prefetch,
            outbox_interval,
            outbox_grace,
            recovery_batch_size,
            recovery_batch_pause,
            circuit_failure_threshold,
            circuit_open_base,
            circuit_open_max,
            retry_jitter,
            retry_after_max,
            auto_disable_after,
            reconcile_interval,
            reconcile_grace,
            retention,
            ingest_max_inflight_bytes,
            ingest_body_timeout,
            ingest_backpressure_lag,
            ingest_backpressure_max_wait,
        } = self;
        f.debug_struct("Config")
            .field("database_url", &redact_urls(database_url))
            .field("database_pool_size", database_pool_size)
            .field("amqp_url", &redact_urls(amqp_url))
            .field("amqp_prefix", amqp_prefix)
            .field("amqp_queue_type", amqp_queue_type)
            .field("ingest_bind", ingest_bind)
            .field("dispatcher_bind", dispatcher_bind)
            .field("secret_key", secret_key)
            .field("retry_schedule", retry_schedule)
            .field("allow_http_targets", allow_http_targets)
            .field("allow_private_targets", allow_private_targets)
            .field("dispatcher_concurrency", dispatcher_concurrency)
            .field("dispatcher_per_subscription", dispatcher_per_subscription)
            .field("dispatcher_prefetch", dispatcher_prefetch)
            .field("dispatcher_max_slot_wait", dispatcher_max_slot_wait)
            .field("ingest_prefetch", ingest_prefetch)
            .field("outbox_interval", outbox_interval)
            .field("outbox_grace", outbox_grace)
            .field("recovery_batch_size", recovery_batch_size)
            .field("recovery_batch_pause", recovery_batch_pause)
            .field("circuit_failure_threshold", circuit_failure_threshold)
            .field("circuit_open_base", circuit_open_base)
            .field("circuit_open_max", circuit_open_max)
            .field("retry_jitter", retry_jitter)
            .field("retry_after_max", retry_after_max)
            .field("auto_disable_after", auto_disable_after)
            .field("reconcile_interval", reconcile_interval)
            .field("reconcile_grace", reconcile_grace)
            .field("retention", retention)
            .field("ingest_max_inflight_bytes", ingest_max_inflight_bytes)
            .field("ingest_body_timeout", ingest_body_timeout)
            .field("ingest_backpressure_lag", ingest_backpressure_lag)
            .field("ingest_backpressure_max_wait", ingest_backpressure_max_wait)
            .finish()
    }
}

/// One or more comma-separated URLs with every password replaced by `***`,
/// for logs and `Debug`. Text that does not parse as a URL is hidden whole.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|raw| match url::Url::parse(raw.trim()) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "<unparsable URL>".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The smallest `INGEST_MAX_INFLIGHT_BYTES`: one publish body of the largest size.
pub const MIN_INFLIGHT_BYTES: usize = 256 * 1024;

/// Splits a comma-separated URL list, dropping blanks.
pub fn split_urls(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect()
}

fn parse_addr(name: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::Invalid { name, reason: format!("{value:?} is not host:port with an IP host") })
}

fn parse_bool(name: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Invalid { name, reason: format!("{value:?} is not a boolean") }),
    }
}

fn parse_number(name: &'static str, value: &str, min: usize, max: usize) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid { name, reason: format!("{value:?} is not a number from {min} to {max}") }),
    }
}

/// A fraction from 0 to 1 (`RETRY_JITTER`).
fn parse_fraction(name: &'static str, value: &str) -> Result<f64, ConfigError> {
    match value.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(ConfigError::Invalid { name, reason: format!("{value:?} is not a number from 0 to 1") }),
    }
}

/// Parses one duration: a whole number with unit `ms`, `s`, `m`, `h` or `d`,
/// above 0 and at most 49 days.
pub fn parse_duration(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { name, reason };
    let entry = value.trim();
    let split = entry.find(|c: char| !c.is_ascii_digit()).unwrap_or(entry.len());
    let (digits, unit) = entry.split_at(split);
    let n: u64 = digits.parse().map_err(|_| invalid(format!("{entry:?} has no number")))?;
    let millis = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1_000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => return Err(invalid(format!("{entry:?}: unit must be ms, s, m, h or d"))),
    };
    if millis == 0 || millis > u32::MAX as u64 {
        return Err(invalid(format!("{entry:?} must be above 0 and at most 49 days")));
    }
    Ok(Duration::from_millis(millis))
}

/// Parses a duration (see [`parse_duration`]) where `0` turns the setting off.
pub fn parse_duration_or_off(name: &'static str, value: &str) -> Result<Option<Duration>, ConfigError> {
    match value.trim() {
        "0" => Ok(None),
        other => parse_duration(name, other).map(Some),
    }
}

/// Parses `5m,1h,6h`: each entry a duration (see [`parse_duration`]).
pub fn parse_schedule(value: &str) -> Result<Vec<Duration>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { name: "RETRY_SCHEDULE", reason };
    let delays =
        value.split(',').map(|entry| parse_duration("RETRY_SCHEDULE", entry)).collect::<Result<Vec<_>, _>>()?;
    if delays.is_empty() {
        return Err(invalid("empty".into()));
    }
    Ok(delays)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_parses_units_and_rejects_garbage() {
        let s = parse_schedule("1s, 5m,1h,500ms").expect("valid");
        assert_eq!(
            s,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(300),
                Duration::from_secs(3600),
                Duration::from_millis(500)
            ]
        );
        assert!(parse_schedule("").is_err());
        assert!(parse_schedule("5x").is_err());
        assert!(parse_schedule("0s").is_err());
        assert!(parse_schedule("m").is_err());
    }

    #[test]
    fn config_requires_a_32_byte_secret_key() {
        let missing = Config::from_lookup(|_| None);
        assert!(matches!(missing, Err(ConfigError::Missing { name: "WEBHOOK_SECRET_KEY", .. })));
        let short = Config::from_lookup(|n| (n == "WEBHOOK_SECRET_KEY").then(|| "c2hvcnQ=".to_owned()));
        assert!(matches!(short, Err(ConfigError::Invalid { name: "WEBHOOK_SECRET_KEY", .. })));
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let ok = Config::from_lookup(|n| (n == "WEBHOOK_SECRET_KEY").then(|| key.clone())).expect("valid");
        assert_eq!(ok.amqp_prefix, "webhooks");
        assert_eq!(ok.retry_delay(1), Duration::from_secs(300));
        assert_eq!(ok.retry_delay(7), Duration::from_secs(6 * 3600));
        assert_eq!(ok.ingest_prefetch, 64);
        assert_eq!(ok.outbox_interval, Duration::from_secs(1));
        assert_eq!(ok.outbox_grace, Duration::from_secs(5));
        assert_eq!((ok.recovery_batch_size, ok.recovery_batch_pause), (100, Duration::from_millis(100)));
        assert_eq!((ok.circuit_failure_threshold, ok.circuit_open_base), (5, Duration::from_secs(30)));
        assert_eq!((ok.circuit_open_max, ok.retry_after_max), (Duration::from_secs(3600), Duration::from_secs(3600)));
        assert_eq!((ok.retry_jitter, ok.auto_disable_after), (0.2, Duration::from_secs(5 * 86_400)));
        let bad_jitter = Config::from_lookup(|n| match n {
            "WEBHOOK_SECRET_KEY" => Some(key.clone()),
            "RETRY_JITTER" => Some("1.5".into()),
            _ => None,
        });
        assert!(matches!(bad_jitter, Err(ConfigError::Invalid { name: "RETRY_JITTER", .. })));
        assert!(!format!("{:?}", ok.secret_key).contains('7'));
        assert_eq!(ok.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(ok.ingest_max_inflight_bytes, 8 << 20);
    }

    #[test]
    fn retention_zero_keeps_everything_and_urls_split_on_commas() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let vars = |name: &str| match name {
            "WEBHOOK_SECRET_KEY" => Some(key.clone()),
            "RETENTION" => Some("0".to_owned()),
            "AMQP_URL" => Some("amqp://a:5672/%2f, amqp://b:5673/%2f,".to_owned()),
            _ => None,
        };
        let config = Config::from_lookup(vars).expect("valid");
        assert_eq!(config.retention, None);
        assert_eq!(config.amqp_urls(), vec!["amqp://a:5672/%2f".to_owned(), "amqp://b:5673/%2f".to_owned()]);
        let bad = Config::from_lookup(|n| match n {
            "WEBHOOK_SECRET_KEY" => Some(key.clone()),
            "RETENTION" => Some("30x".to_owned()),
            _ => None,
        });
        assert!(matches!(bad, Err(ConfigError::Invalid { name: "RETENTION", .. })));
    }

    #[test]
    fn debug_hides_passwords_and_the_secret_key() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let config = Config::from_lookup(|n| match n {
            "WEBHOOK_SECRET_KEY" => Some(key.clone()),
            "DATABASE_URL" => Some("postgres://app:pg-hunter2@db.example:5432/webhooks".to_owned()),
            "AMQP_URL" => Some("amqp://app:mq-hunter2@mq1:5672/%2f,amqps://app:mq-hunter3@mq2/%2f".to_owned()),
            _ => None,
        })
        .expect("valid");
        let printed = format!("{config:?}");
        for secret in ["pg-hunter2", "mq-hunter2", "mq-hunter3", key.as_str()] {
            assert!(!printed.contains(secret), "{secret} printed in {printed}");
        }
        assert!(printed.contains("postgres://app:***@db.example:5432/webhooks"), "{printed}");
        assert!(printed.contains("amqps://app:***@mq2/%2f"), "{printed}");
        assert_eq!(redact_urls("not a url with a password"), "<unparsable URL>");
    }
}
