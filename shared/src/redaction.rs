//! Which header values are secrets: the delivery log shows what was sent and
//! what came back, but never a credential in clear.

/// What a masked value reads.
pub const MASK: &str = "***";

/// Name fragments (any case) that mark a header value as a secret.
const SENSITIVE_FRAGMENTS: [&str; 6] = ["authorization", "token", "secret", "key", "cookie", "password"];

/// Whether a header named `name` carries a secret (its value is shown as [`MASK`]).
pub fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE_FRAGMENTS.iter().any(|fragment| name.contains(fragment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_sensitive_whatever_their_case() {
        for name in ["Authorization", "X-Api-Key", "x-auth-token", "Set-Cookie", "X-Client-Secret", "PASSWORD"] {
            assert!(is_sensitive_header(name), "{name}");
        }
        for name in ["content-type", "x-webhook-signature", "webhook-id", "user-agent", "x-tenant"] {
            assert!(!is_sensitive_header(name), "{name}");
        }
    }
}
