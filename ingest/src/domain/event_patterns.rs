//! Which events a subscription wants.

use shared::catalog::Catalog;

use super::InvalidField;

/// Most patterns one subscription may list; `*` and `category.*` cover more.
pub const MAX_EVENT_PATTERNS: usize = 100;

/// A non-empty, duplicate-free list of catalog event types, `X.*` wildcards
/// (type prefix or category) and `*`, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPatterns(Vec<String>);

impl EventPatterns {
    /// Checks every entry against the catalog; drops repeated entries.
    pub fn parse(patterns: Vec<String>, catalog: &Catalog) -> Result<Self, InvalidField> {
        if patterns.is_empty() {
            return Err(InvalidField::new("events", "must list at least one event type"));
        }
        if patterns.len() > MAX_EVENT_PATTERNS {
            return Err(InvalidField::new("events", format!("must list at most {MAX_EVENT_PATTERNS} event types")));
        }
        let mut unique: Vec<String> = Vec::with_capacity(patterns.len());
        for (index, pattern) in patterns.into_iter().enumerate() {
            if !catalog.is_valid_pattern(&pattern) {
                let message = format!(
                    "unknown event type {pattern:?}: use a type from GET /api/v1/webhooks/events, `<category>.*`, `<prefix>.*` or `*`"
                );
                return Err(InvalidField::with_value(format!("events[{index}]"), pattern, message));
            }
            if !unique.contains(&pattern) {
                unique.push(pattern);
            }
        }
        Ok(Self(unique))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use shared::catalog::EventType;

    use super::*;

    fn catalog() -> Catalog {
        Catalog::new(vec![
            EventType { event_type: "invoice.created".into(), description: "d".into(), category: "billing".into() },
            EventType { event_type: "invoice.paid".into(), description: "d".into(), category: "billing".into() },
        ])
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn catalog_types_and_wildcards_are_kept_in_order_without_repeats() {
        let parsed = EventPatterns::parse(strings(&["invoice.paid", "billing.*", "invoice.paid", "*"]), &catalog());
        assert_eq!(parsed.expect("valid").as_slice(), ["invoice.paid", "billing.*", "*"]);
    }

    #[test]
    fn unknown_types_are_named_by_position() {
        let err =
            EventPatterns::parse(strings(&["invoice.paid", "*", "invoice.nope"]), &catalog()).expect_err("unknown");
        assert_eq!(err.field, "events[2]");
        assert_eq!(err.value, Some("invoice.nope".into()));
        assert!(err.message.contains("invoice.nope"));
    }

    #[test]
    fn the_list_is_neither_empty_nor_too_long() {
        assert_eq!(EventPatterns::parse(vec![], &catalog()).expect_err("empty").field, "events");
        let many = vec!["*".to_owned(); MAX_EVENT_PATTERNS + 1];
        assert_eq!(EventPatterns::parse(many, &catalog()).expect_err("too many").field, "events");
    }
}
