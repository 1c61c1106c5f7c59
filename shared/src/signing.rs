//! The two signatures a subscriber can verify.
//!
//! * `X-Webhook-Signature`: hex HMAC-SHA256 of the body, keyed by the UTF-8
//!   bytes of the whole secret string (the guide's verification code).
//! * Standard Webhooks `webhook-signature`: `v1,` + base64 HMAC-SHA256 of
//!   `{id}.{timestamp}.{body}`, keyed by the base64-decoded part of the secret.

use base64::Engine;
use ring::hmac;

/// Hex HMAC-SHA256 of `body` keyed by the secret's UTF-8 bytes.
pub fn legacy_signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hex::encode(hmac::sign(&key, body).as_ref())
}

/// The Standard Webhooks key of a `whsec_…` secret: its decoded bytes.
/// A secret that is not valid base64 after the prefix is used as raw bytes.
pub fn standard_key(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD.decode(encoded).unwrap_or_else(|_| secret.as_bytes().to_vec())
}

/// One `v1,<base64>` Standard Webhooks signature.
pub fn standard_signature(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &standard_key(secret));
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(msg_id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(ctx.sign().as_ref()))
}

/// The `webhook-signature` header: one signature per secret, space-separated
/// (the new secret first, then the previous one during its grace period).
pub fn standard_signature_header(secrets: &[&str], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|secret| standard_signature(secret, msg_id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// Verifies a `webhook-signature` header against one secret, in constant time.
/// Subscribers' side, used by our tests and the bench sink.
pub fn verify_standard(secret: &str, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &standard_key(secret));
    let mut message = Vec::with_capacity(body.len() + msg_id.len() + 24);
    message.extend_from_slice(msg_id.as_bytes());
    message.push(b'.');
    message.extend_from_slice(timestamp.to_string().as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    header.split(' ').filter_map(|entry| entry.strip_prefix("v1,")).any(|sig| {
        base64::engine::general_purpose::STANDARD
            .decode(sig)
            .map(|tag| hmac::verify(&key, &message, &tag).is_ok())
            .unwrap_or(false)
    })
}

/// Verifies an `X-Webhook-Signature` header, in constant time.
pub fn verify_legacy(secret: &str, body: &[u8], header: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hex::decode(header).map(|tag| hmac::verify(&key, body, &tag).is_ok()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_python_vector() {
        let sig = standard_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn standard_webhooks_rust_vector() {
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let sig = standard_signature(secret, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body);
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        assert!(verify_standard(
            secret,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            body,
            &format!("v1,AAAA {sig}")
        ));
        assert!(!verify_standard(secret, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367554, body, &sig));
    }

    #[test]
    fn legacy_signature_matches_github_vector() {
        // GitHub's documented HMAC-SHA256 example uses the same construction.
        let sig = legacy_signature("It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(sig, "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
        assert!(verify_legacy("It's a Secret to Everybody", b"Hello, World!", &sig));
        assert!(!verify_legacy("other", b"Hello, World!", &sig));
    }
}
