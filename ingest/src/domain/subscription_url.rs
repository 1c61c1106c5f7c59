//! Where a subscription's webhooks go.

use shared::targets::{self, TargetError};

use super::InvalidField;

/// A webhook target URL: absolute http(s), no credentials, a public host
/// unless the deployment allows otherwise (`ALLOW_HTTP_TARGETS`,
/// `ALLOW_PRIVATE_TARGETS`). Held in normalized form, exactly what the
/// dispatcher will POST to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionUrl(String);

impl SubscriptionUrl {
    /// Checks `raw` against the deployment's target policy.
    pub fn parse(raw: &str, allow_http: bool, allow_private: bool) -> Result<Self, InvalidField> {
        match targets::check_url(raw.trim(), allow_http, allow_private) {
            Ok(url) => Ok(Self(url.into())),
            Err(err @ TargetError::TooLong) => Err(InvalidField::new("url", err.to_string())),
            Err(err) => Err(InvalidField::with_value("url", raw, err.to_string())),
        }
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
    fn urls_are_normalized_and_checked_against_the_policy() {
        let url = SubscriptionUrl::parse(" https://Example.com", false, false).expect("valid");
        assert_eq!(url.as_str(), "https://example.com/");
        let err = SubscriptionUrl::parse("http://example.com/", false, false).expect_err("http refused");
        assert_eq!(err.field, "url");
        assert!(SubscriptionUrl::parse("https://10.0.0.1/", false, false).is_err());
        assert!(SubscriptionUrl::parse("https://10.0.0.1/", false, true).is_ok());
        assert!(SubscriptionUrl::parse("not a url", true, true).is_err());
    }
}
