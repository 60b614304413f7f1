//! Encryption at rest of webhook signing secrets, with a server key (`HERALD_SECRET_KEY`).
//!
//! A sealed secret is `enc:v1:<base64(nonce || ciphertext || tag)>`: AES-256-GCM with a fresh
//! random 96-bit nonce per seal and the endpoint id as associated data, so a sealed secret
//! copied onto another endpoint does not open. Secrets stored in clear text (before a key was
//! configured) keep working: [`reveal`] passes them through, and [`protect`] seals only when a
//! key is configured.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand::RngCore;

/// What every stored sealed value starts with. Signing secrets in clear text start with
/// `whsec_`, so the two cannot be confused.
const SEALED_PREFIX: &str = "enc:";
/// The current format, the only one [`SecretKey::open`] reads.
const V1_PREFIX: &str = "enc:v1:";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The server key that seals secrets at rest: 32 bytes for AES-256-GCM.
#[derive(Clone)]
pub struct SecretKey(Aes256Gcm);

impl std::fmt::Debug for SecretKey {
    /// The key never reaches logs, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Why a configured `HERALD_SECRET_KEY` cannot be used. Messages never include the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    #[error("HERALD_SECRET_KEY is not valid base64; make one with `openssl rand -base64 32`")]
    NotBase64,
    #[error("HERALD_SECRET_KEY must be base64 of exactly 32 bytes, not {0} bytes; make one with `openssl rand -base64 32`")]
    WrongLength(usize),
}

/// Why a stored secret cannot be revealed. Messages never include the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretBoxError {
    #[error("the signing secret is encrypted at rest but HERALD_SECRET_KEY is not configured")]
    MissingKey,
    #[error("the sealed signing secret is malformed or of an unknown format version")]
    Malformed,
    #[error("the sealed signing secret cannot be decrypted: wrong HERALD_SECRET_KEY, sealed for another endpoint, or corrupted")]
    Undecryptable,
}

impl SecretKey {
    /// Reads a key from standard base64 (surrounding whitespace ignored), which must decode to
    /// exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SecretKeyError> {
        let mut bytes = BASE64
            .decode(text.trim())
            .map_err(|_| SecretKeyError::NotBase64)?;
        let key = if bytes.len() == KEY_LEN {
            Ok(Self::from_bytes(&bytes))
        } else {
            Err(SecretKeyError::WrongLength(bytes.len()))
        };
        bytes.fill(0);
        key
    }

    /// A fresh random key (for tests and first-time setup).
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        let key = Self::from_bytes(&bytes);
        bytes.fill(0);
        key
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        Self(Aes256Gcm::new_from_slice(bytes).expect("the length was checked"))
    }

    /// Encrypts `plaintext` bound to `context` (the endpoint id): `enc:v1:<base64>`. Every call
    /// uses a fresh random nonce, so sealing the same secret twice gives different texts.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any message shorter than 64 GiB");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        format!("{V1_PREFIX}{}", BASE64.encode(sealed))
    }

    /// Decrypts what [`SecretKey::seal`] produced with the same key and context.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SecretBoxError> {
        let encoded = sealed
            .strip_prefix(V1_PREFIX)
            .ok_or(SecretBoxError::Malformed)?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| SecretBoxError::Malformed)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretBoxError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plaintext = self
            .0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretBoxError::Undecryptable)?;
        String::from_utf8(plaintext).map_err(|_| SecretBoxError::Malformed)
    }
}

/// Whether a stored secret is sealed (as opposed to clear text from before a key was
/// configured). Any `enc:` value counts, so a future format is never mistaken for clear text.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

/// The clear text of a stored secret: clear text passes through unchanged; a sealed one is
/// opened with `key` and `context` (the endpoint id).
pub fn reveal(
    stored: &str,
    key: Option<&SecretKey>,
    context: &str,
) -> Result<String, SecretBoxError> {
    if !is_sealed(stored) {
        return Ok(stored.to_owned());
    }
    key.ok_or(SecretBoxError::MissingKey)?.open(stored, context)
}

/// What to store for a secret: sealed when a key is configured, else the clear text.
pub fn protect(plaintext: &str, key: Option<&SecretKey>, context: &str) -> String {
    match key {
        Some(key) => key.seal(plaintext, context),
        None => plaintext.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ENDPOINT: &str = "ep_01J0000000000000000000000";

    #[test]
    fn round_trip() {
        let key = SecretKey::generate();
        let sealed = key.seal(SECRET, ENDPOINT);
        assert!(sealed.starts_with("enc:v1:"));
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains(SECRET));
        assert_eq!(key.open(&sealed, ENDPOINT).unwrap(), SECRET);
        assert_eq!(reveal(&sealed, Some(&key), ENDPOINT).unwrap(), SECRET);
        // nonce (12) + ciphertext (as long as the plaintext) + tag (16)
        let bytes = BASE64.decode(&sealed["enc:v1:".len()..]).unwrap();
        assert_eq!(bytes.len(), NONCE_LEN + SECRET.len() + TAG_LEN);
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let key = SecretKey::generate();
        let a = key.seal(SECRET, ENDPOINT);
        let b = key.seal(SECRET, ENDPOINT);
        assert_ne!(a, b);
        let nonce = |s: &str| BASE64.decode(&s["enc:v1:".len()..]).unwrap()[..NONCE_LEN].to_vec();
        assert_ne!(nonce(&a), nonce(&b));
        assert_eq!(
            key.open(&a, ENDPOINT).unwrap(),
            key.open(&b, ENDPOINT).unwrap()
        );
    }

    #[test]
    fn a_secret_sealed_for_one_endpoint_does_not_open_on_another() {
        let key = SecretKey::generate();
        let sealed = key.seal(SECRET, ENDPOINT);
        assert_eq!(
            key.open(&sealed, "ep_other"),
            Err(SecretBoxError::Undecryptable)
        );
        assert_eq!(
            reveal(&sealed, Some(&key), ""),
            Err(SecretBoxError::Undecryptable)
        );
    }

    #[test]
    fn the_wrong_key_fails() {
        let sealed = SecretKey::generate().seal(SECRET, ENDPOINT);
        assert_eq!(
            SecretKey::generate().open(&sealed, ENDPOINT),
            Err(SecretBoxError::Undecryptable)
        );
    }

    #[test]
    fn tampering_is_detected() {
        let key = SecretKey::generate();
        let sealed = key.seal(SECRET, ENDPOINT);
        let mut bytes = BASE64.decode(&sealed["enc:v1:".len()..]).unwrap();
        // Flip one bit in the nonce, the ciphertext and the tag in turn.
        for at in [0, NONCE_LEN + 3, bytes.len() - 1] {
            bytes[at] ^= 0x01;
            let tampered = format!("enc:v1:{}", BASE64.encode(&bytes));
            assert_eq!(
                key.open(&tampered, ENDPOINT),
                Err(SecretBoxError::Undecryptable),
                "flipping byte {at}"
            );
            bytes[at] ^= 0x01;
        }
        // Truncated or otherwise mangled texts are refused too.
        let short = format!(
            "enc:v1:{}",
            BASE64.encode(&bytes[..NONCE_LEN + TAG_LEN - 1])
        );
        assert_eq!(key.open(&short, ENDPOINT), Err(SecretBoxError::Malformed));
        assert_eq!(
            key.open("enc:v1:!!not base64!!", ENDPOINT),
            Err(SecretBoxError::Malformed)
        );
        let v2 = sealed.replacen("enc:v1:", "enc:v2:", 1);
        assert_eq!(key.open(&v2, ENDPOINT), Err(SecretBoxError::Malformed));
        assert_eq!(
            reveal(&v2, Some(&key), ENDPOINT),
            Err(SecretBoxError::Malformed)
        );
    }

    #[test]
    fn clear_text_passes_through_reveal() {
        let key = SecretKey::generate();
        assert!(!is_sealed(SECRET));
        assert_eq!(reveal(SECRET, None, ENDPOINT).unwrap(), SECRET);
        assert_eq!(reveal(SECRET, Some(&key), ENDPOINT).unwrap(), SECRET);
    }

    #[test]
    fn a_sealed_secret_needs_the_key() {
        let sealed = SecretKey::generate().seal(SECRET, ENDPOINT);
        assert_eq!(
            reveal(&sealed, None, ENDPOINT),
            Err(SecretBoxError::MissingKey)
        );
    }

    #[test]
    fn protect_seals_only_with_a_key() {
        assert_eq!(protect(SECRET, None, ENDPOINT), SECRET);
        let key = SecretKey::generate();
        let stored = protect(SECRET, Some(&key), ENDPOINT);
        assert!(is_sealed(&stored));
        assert_eq!(reveal(&stored, Some(&key), ENDPOINT).unwrap(), SECRET);
    }

    #[test]
    fn keys_are_base64_of_exactly_32_bytes() {
        let text = BASE64.encode([7u8; 32]);
        let key = SecretKey::from_base64(&format!("  {text}\n")).unwrap();
        let again = SecretKey::from_base64(&text).unwrap();
        // The same key bytes open each other's seals.
        assert_eq!(
            again.open(&key.seal(SECRET, ENDPOINT), ENDPOINT).unwrap(),
            SECRET
        );
        for len in [0, 16, 31, 33, 64] {
            let err = SecretKey::from_base64(&BASE64.encode(vec![7u8; len])).unwrap_err();
            assert_eq!(err, SecretKeyError::WrongLength(len));
            assert!(err.to_string().contains("openssl rand -base64 32"));
        }
        let err = SecretKey::from_base64("not base64!").unwrap_err();
        assert_eq!(err, SecretKeyError::NotBase64);
        assert!(err.to_string().contains("openssl rand -base64 32"));
    }

    #[test]
    fn nothing_secret_is_printed() {
        let text = BASE64.encode([7u8; 32]);
        let key = SecretKey::from_base64(&text).unwrap();
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
        let sealed = key.seal(SECRET, ENDPOINT);
        for err in [
            reveal(&sealed, None, ENDPOINT).unwrap_err(),
            reveal(&sealed, Some(&SecretKey::generate()), ENDPOINT).unwrap_err(),
            key.open("enc:v1:AAAA", ENDPOINT).unwrap_err(),
        ] {
            let message = format!("{err} {err:?}");
            assert!(!message.contains(SECRET) && !message.contains(&text));
        }
    }
}
