//! Webhook signatures, per the Standard Webhooks specification.
//!
//! The signed content is `{msg_id}.{timestamp}.{body}`, the MAC is HMAC-SHA256 keyed with the
//! base64-decoded part of the endpoint secret (`whsec_<base64>`), and the header value is
//! `v1,<base64 MAC>`. Receivers deduplicate with `webhook-id` and reject stale timestamps.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const SECRET_PREFIX: &str = "whsec_";

/// A webhook endpoint's signing secret, `whsec_` followed by base64 of 24 to 64 random bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointSecret(String);

impl std::fmt::Debug for EndpointSecret {
    /// Secrets never reach logs, not even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndpointSecret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a signing secret is `whsec_` followed by base64 of 24 to 64 bytes")]
pub struct InvalidSecret;

impl EndpointSecret {
    /// A fresh secret of 32 random bytes.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(format!("{SECRET_PREFIX}{}", BASE64.encode(key)))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let secret = Self(text.to_owned());
        let len = secret.key_bytes()?.len();
        if (24..=64).contains(&len) {
            Ok(secret)
        } else {
            Err(InvalidSecret)
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn key_bytes(&self) -> Result<Vec<u8>, InvalidSecret> {
        let encoded = self.0.strip_prefix(SECRET_PREFIX).ok_or(InvalidSecret)?;
        BASE64.decode(encoded).map_err(|_| InvalidSecret)
    }
}

/// The `webhook-signature` value for one message: `v1,<base64 HMAC-SHA256>`.
pub fn standard_signature(
    secret: &EndpointSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let key = secret
        .key_bytes()
        .expect("secrets are validated when created");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The `Herald-Signature` value of the Stripe-style scheme: `t=<ts>,v1=<hex HMAC of "{t}.{body}">`.
/// The key is the whole secret string, as Stripe's own verification code uses it.
pub fn stripe_signature(secret: &EndpointSecret, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        crate::api_key::hex(&mac.finalize().into_bytes())
    )
}

/// The `X-Herald-Signature` value of the hex scheme: hex HMAC-SHA256 of the body, keyed with
/// the whole secret string.
pub fn hex_signature(secret: &EndpointSecret, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("any key length");
    mac.update(body);
    crate::api_key::hex(&mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's test vectors.
    #[test]
    fn matches_the_specification_vector() {
        let secret = EndpointSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = standard_signature(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secrets_are_valid_and_distinct() {
        let a = EndpointSecret::generate();
        assert!(EndpointSecret::parse(a.expose()).is_ok());
        assert_ne!(a, EndpointSecret::generate());
        assert_eq!(format!("{a:?}"), "EndpointSecret(..)");
    }

    #[test]
    fn stripe_and_hex_schemes_sign_with_the_secret_string() {
        let secret = EndpointSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let stripe = stripe_signature(&secret, 1614265330, b"{}");
        assert!(
            stripe.starts_with("t=1614265330,v1=") && stripe.len() == "t=1614265330,v1=".len() + 64
        );
        assert_eq!(hex_signature(&secret, b"{}").len(), 64);
        assert_ne!(
            hex_signature(&secret, b"{}"),
            hex_signature(&secret, b"{ }")
        );
    }

    #[test]
    fn rejects_malformed_secrets() {
        assert!(EndpointSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(EndpointSecret::parse("whsec_!!!").is_err());
        assert!(EndpointSecret::parse("whsec_c2hvcnQ=").is_err());
    }
}
