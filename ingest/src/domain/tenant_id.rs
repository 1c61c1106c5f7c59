//! Which tenant an event, a key or a request belongs to.

use super::{
    text::{self, TextKind},
    InvalidField,
};

/// A tenant id: 1 to 128 characters on one line (no control characters),
/// surrounding whitespace trimmed. Publishing, `api-key create --tenant` and
/// `api-key list --tenant` all take it through [`TenantId::parse`], so a key
/// can only be made for a tenant that can publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantId(String);

impl TenantId {
    /// Longest tenant id, in characters.
    pub const MAX_CHARS: usize = 128;

    /// Checks `raw`; errors name the field `tenant_id`.
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        let tenant_id = raw.trim();
        if tenant_id.is_empty() || tenant_id.chars().count() > Self::MAX_CHARS {
            return Err(InvalidField::new("tenant_id", format!("must be 1 to {} characters", Self::MAX_CHARS)));
        }
        text::check("tenant_id", tenant_id, TextKind::Line)?;
        Ok(Self(tenant_id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_one_trimmed_line() {
        assert_eq!(TenantId::parse("  acme ").expect("valid").as_str(), "acme");
        assert!(TenantId::parse(&"é".repeat(128)).is_ok());
        for bad in ["", "   ", "a\nb", "a\u{0}b", "tab\there"] {
            assert_eq!(TenantId::parse(bad).expect_err(bad).field, "tenant_id");
        }
        assert!(TenantId::parse(&"a".repeat(129)).is_err());
    }
}
