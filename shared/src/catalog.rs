//! The event catalog: which event types exist, and which subscription
//! patterns (`type`, `prefix.*`, `category.*`, `*`) match an event type.

use std::collections::{BTreeSet, HashMap};

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::schema::event_types;

/// One catalog entry, as `GET /webhooks/events` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = event_types)]
pub struct EventType {
    #[serde(rename = "type")]
    #[diesel(column_name = event_type)]
    pub event_type: String,
    pub description: String,
    pub category: String,
}

/// The service's own category: `webhook.test` and the operational events
/// (`webhook.subscription.disabled`, …). Only the service publishes them
/// (`POST /events` and AMQP publishing refuse them), and the `*` pattern does
/// not match them: a tenant opts in with `webhook.*` or an exact type.
pub const OPERATIONAL_CATEGORY: &str = "webhook";

/// The prefix of every type in [`OPERATIONAL_CATEGORY`].
pub const RESERVED_PREFIX: &str = "webhook.";

/// Whether `event_type` is one of ours ([`OPERATIONAL_CATEGORY`]) rather than
/// a module's: reserved for the service, never matched by `*`, and a delivery
/// of one never causes an operational event.
pub fn is_reserved(event_type: &str) -> bool {
    event_type.starts_with(RESERVED_PREFIX)
}

/// The patterns that match an operational event type: the type and
/// `webhook.*`, never `*`.
pub fn operational_patterns(event_type: &str) -> Vec<String> {
    vec![event_type.to_owned(), format!("{OPERATIONAL_CATEGORY}.*")]
}

/// The catalog, loaded once at start from the `event_types` table.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    types: Vec<EventType>,
    by_type: HashMap<String, usize>,
    /// Valid `X` of an `X.*` wildcard: event-type prefixes and categories.
    wildcard_stems: BTreeSet<String>,
}

impl Catalog {
    pub fn new(mut types: Vec<EventType>) -> Self {
        types.sort_by(|a, b| (&a.category, &a.event_type).cmp(&(&b.category, &b.event_type)));
        let by_type = types.iter().enumerate().map(|(i, t)| (t.event_type.clone(), i)).collect();
        let wildcard_stems = types.iter().flat_map(|t| [stem(&t.event_type).to_owned(), t.category.clone()]).collect();
        Self { types, by_type, wildcard_stems }
    }

    /// Loads the catalog from the database.
    pub async fn load(conn: &mut AsyncPgConnection) -> Result<Self, diesel::result::Error> {
        let types = event_types::table.select(EventType::as_select()).load(conn).await?;
        Ok(Self::new(types))
    }

    pub fn types(&self) -> &[EventType] {
        &self.types
    }

    pub fn get(&self, event_type: &str) -> Option<&EventType> {
        self.by_type.get(event_type).map(|&i| &self.types[i])
    }

    pub fn contains(&self, event_type: &str) -> bool {
        self.by_type.contains_key(event_type)
    }

    /// Whether `pattern` may stand in a subscription's `events`.
    pub fn is_valid_pattern(&self, pattern: &str) -> bool {
        if pattern == "*" {
            return true;
        }
        match pattern.strip_suffix(".*") {
            Some(stem) => self.wildcard_stems.contains(stem),
            None => self.contains(pattern),
        }
    }

    /// Every pattern that matches `event_type`; fan-out selects the
    /// subscriptions whose `events` overlap this list (a GIN-indexed `&&`).
    /// `*` matches every event except the operational ones.
    pub fn matching_patterns(&self, event_type: &str) -> Vec<String> {
        let category = self.get(event_type).map(|entry| entry.category.as_str());
        if is_reserved(event_type) || category == Some(OPERATIONAL_CATEGORY) {
            return operational_patterns(event_type);
        }
        let mut patterns = vec![event_type.to_owned(), format!("{}.*", stem(event_type)), "*".to_owned()];
        if let Some(entry) = self.get(event_type) {
            let category = format!("{}.*", entry.category);
            if !patterns.contains(&category) {
                patterns.push(category);
            }
        }
        patterns
    }
}

impl Catalog {
    /// The catalog types a subscription with these `events` patterns receives.
    pub fn types_matching(&self, patterns: &[String]) -> Vec<String> {
        self.types
            .iter()
            .filter(|t| self.matching_patterns(&t.event_type).iter().any(|p| patterns.contains(p)))
            .map(|t| t.event_type.clone())
            .collect()
    }
}

/// `invoice` of `invoice.created`.
fn stem(event_type: &str) -> &str {
    event_type.split_once('.').map_or(event_type, |(stem, _)| stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::new(vec![
            EventType { event_type: "invoice.created".into(), description: "d".into(), category: "billing".into() },
            EventType { event_type: "email.sent".into(), description: "d".into(), category: "communication".into() },
            EventType {
                event_type: "webhook.delivery.failed".into(),
                description: "d".into(),
                category: "webhook".into(),
            },
        ])
    }

    #[test]
    fn patterns_accept_types_prefixes_categories_and_star() {
        let c = catalog();
        for ok in ["invoice.created", "invoice.*", "billing.*", "*", "communication.*"] {
            assert!(c.is_valid_pattern(ok), "{ok}");
        }
        for bad in ["invoice.nope", "nope.*", "invoice", "", "*.*", "invoice.created.*"] {
            assert!(!c.is_valid_pattern(bad), "{bad}");
        }
    }

    #[test]
    fn matching_patterns_cover_every_form() {
        assert_eq!(catalog().matching_patterns("invoice.created"), ["invoice.created", "invoice.*", "*", "billing.*"]);
    }

    #[test]
    fn star_does_not_match_operational_events() {
        let c = catalog();
        assert_eq!(c.matching_patterns("webhook.delivery.failed"), ["webhook.delivery.failed", "webhook.*"]);
        assert_eq!(c.types_matching(&["*".into()]), ["invoice.created", "email.sent"]);
        assert_eq!(c.types_matching(&["webhook.*".into()]), ["webhook.delivery.failed"]);
        assert_eq!(c.types_matching(&["billing.*".into(), "email.sent".into()]), ["invoice.created", "email.sent"]);
    }

    #[test]
    fn the_reserved_types_are_the_operational_category() {
        assert_eq!(RESERVED_PREFIX, format!("{OPERATIONAL_CATEGORY}."));
        assert!(is_reserved("webhook.test") && is_reserved("webhook.delivery.failed"));
        assert!(!is_reserved("webhooks.created") && !is_reserved("invoice.created"));
    }
}
