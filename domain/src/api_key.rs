//! API keys: `hk_` and 40 random base62 characters, stored only as their SHA-256.

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

const KEY_PREFIX: &str = "hk_";
const RANDOM_CHARS: usize = 40;
/// How much of a key is kept in the clear so people can tell their keys apart.
const DISPLAY_PREFIX_CHARS: usize = KEY_PREFIX.len() + 8;

/// A freshly made key: the secret to show once, and what may be stored.
pub struct NewApiKey {
    /// `hk_...`: shown to the caller once, never stored or logged.
    pub secret: String,
    /// Hex SHA-256 of the secret: the only form that is stored.
    pub hash: String,
    /// The first characters, safe to display (`hk_AbCdEfGh`).
    pub prefix: String,
}

impl NewApiKey {
    pub fn generate() -> Self {
        let secret = format!(
            "{KEY_PREFIX}{}",
            Alphanumeric.sample_string(&mut rand::rng(), RANDOM_CHARS)
        );
        Self {
            hash: hash_api_key(&secret),
            prefix: secret[..DISPLAY_PREFIX_CHARS].to_owned(),
            secret,
        }
    }
}

/// Hex SHA-256 of a presented key. Keys carry 238 bits of randomness, so a fast hash is the
/// right tool (no salt or KDF needed, unlike passwords).
pub fn hash_api_key(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Whether a presented bearer token has the shape of an API key (cheap pre-check).
pub fn looks_like_api_key(token: &str) -> bool {
    token.len() == KEY_PREFIX.len() + RANDOM_CHARS
        && token.starts_with(KEY_PREFIX)
        && token[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
}

/// Lower-case hex encoding.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = NewApiKey::generate();
        assert!(looks_like_api_key(&key.secret));
        assert!(key.secret.starts_with(&key.prefix));
        assert_eq!(key.hash, hash_api_key(&key.secret));
        assert_eq!(key.hash.len(), 64);
        assert!(!key.hash.contains(&key.secret[3..]));
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn shape_check_rejects_other_tokens() {
        assert!(!looks_like_api_key("hk_short"));
        assert!(!looks_like_api_key(&format!("sk_{}", "a".repeat(40))));
        assert!(!looks_like_api_key(&format!("hk_{}", "-".repeat(40))));
    }
}
