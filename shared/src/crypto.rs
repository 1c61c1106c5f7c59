//! Secrets at rest and API tokens: AES-256-GCM for signing secrets, SHA-256
//! for API keys, and ring's `SystemRandom` for everything random.

use base64::Engine;
use ring::{
    aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN},
    digest,
    rand::{SecureRandom, SystemRandom},
};

use crate::config::SecretKey;

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the system random generator failed")]
    Random,
    #[error("a stored secret could not be decrypted (wrong WEBHOOK_SECRET_KEY or corrupt row)")]
    Decrypt,
}

/// Encrypts and decrypts signing secrets under `WEBHOOK_SECRET_KEY`.
///
/// The stored form is `nonce || ciphertext || tag`; the subscription id is the
/// associated data, so a ciphertext copied onto another row does not open.
#[derive(Clone)]
pub struct SecretBox {
    key: std::sync::Arc<LessSafeKey>,
    rng: SystemRandom,
}

impl SecretBox {
    pub fn new(key: &SecretKey) -> Self {
        #[expect(clippy::expect_used, reason = "a 32-byte key is always valid for AES-256-GCM")]
        let unbound = UnboundKey::new(&AES_256_GCM, &key.0).expect("32-byte AES key");
        Self { key: std::sync::Arc::new(LessSafeKey::new(unbound)), rng: SystemRandom::new() }
    }

    /// Encrypts `plaintext`, bound to `owner_id`.
    pub fn seal(&self, owner_id: &uuid::Uuid, plaintext: &str) -> Result<Vec<u8>, CryptoError> {
        self.seal_bound(owner_id.as_bytes(), plaintext)
    }

    /// Decrypts what [`SecretBox::seal`] stored for `owner_id`.
    pub fn open(&self, owner_id: &uuid::Uuid, stored: &[u8]) -> Result<String, CryptoError> {
        self.open_bound(owner_id.as_bytes(), stored)
    }

    /// Encrypts `plaintext`, bound to `context` (the associated data): it opens
    /// only with the same context, so a value copied to another row or field
    /// does not.
    pub fn seal_bound(&self, context: &[u8], plaintext: &str) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut buffer = plaintext.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), &mut buffer)
            .map_err(|_| CryptoError::Random)?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&buffer);
        Ok(stored)
    }

    /// Decrypts what [`SecretBox::seal_bound`] stored for `context`.
    pub fn open_bound(&self, context: &[u8], stored: &[u8]) -> Result<String, CryptoError> {
        if stored.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
        let mut buffer = sealed.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(context), &mut buffer).map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plain.to_vec()).map_err(|_| CryptoError::Decrypt)
    }
}

/// Fills `N` bytes from the system random generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_signing_secret() -> Result<String, CryptoError> {
    let bytes = random_bytes::<32>()?;
    Ok(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// A new API token: `whk_` + URL-safe base64 of 32 random bytes.
pub fn generate_api_token() -> Result<String, CryptoError> {
    let bytes = random_bytes::<32>()?;
    Ok(format!("whk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// What is stored of an API token: its SHA-256.
pub fn hash_api_token(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes()).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_owner() {
        let boxed = SecretBox::new(&SecretKey([3u8; 32]));
        let owner = uuid::Uuid::now_v7();
        let sealed = boxed.seal(&owner, "whsec_abc").expect("seal");
        assert!(!sealed.windows(9).any(|w| w == b"whsec_abc"));
        assert_eq!(boxed.open(&owner, &sealed).expect("open"), "whsec_abc");
        assert!(boxed.open(&uuid::Uuid::now_v7(), &sealed).is_err());
        let other = SecretBox::new(&SecretKey([4u8; 32]));
        assert!(other.open(&owner, &sealed).is_err());
    }

    #[test]
    fn signing_secrets_are_whsec_and_32_bytes() {
        let secret = generate_signing_secret().expect("secret");
        let raw = secret.strip_prefix("whsec_").expect("prefix");
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw).expect("base64");
        assert_eq!(bytes.len(), 32);
        assert_ne!(secret, generate_signing_secret().expect("secret"));
    }
}
