//! Standard Webhooks signatures: `webhook-id`, `webhook-timestamp` and `webhook-signature`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use destination_core::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::HttpError;

/// The header that carries the message id, stable across retries.
pub(crate) const ID_HEADER: &str = "webhook-id";
/// The header that carries the signing time, in seconds since the Unix epoch.
pub(crate) const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The header that carries the signatures, space-separated, one per secret.
pub(crate) const SIGNATURE_HEADER: &str = "webhook-signature";

const PREFIX: &str = "whsec_";

/// The decoded signing keys; `Debug` shows only how many there are.
#[derive(Clone)]
pub(crate) struct Signer {
    keys: Vec<Vec<u8>>,
}

impl Signer {
    /// Decodes `whsec_<base64>` secrets.
    pub(crate) fn new(secrets: &[Secret]) -> Result<Self, HttpError> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                let invalid = || HttpError::InvalidSigningSecret { index };
                let encoded = secret
                    .expose()
                    .trim()
                    .strip_prefix(PREFIX)
                    .ok_or_else(invalid)?;
                let key = STANDARD
                    .decode(encoded)
                    .or_else(|_| STANDARD_NO_PAD.decode(encoded))
                    .map_err(|_| invalid())?;
                if key.is_empty() {
                    return Err(invalid());
                }
                Ok(key)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// Whether there is no key, so that requests go unsigned.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `webhook-signature` value: `v1,<base64>` for each key, space-separated.
    pub(crate) fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut out = String::new();
        for key in &self.keys {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac takes any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            out.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
        }
        out
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({} keys)", self.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_malformed_secrets_without_showing_them() {
        for bad in [
            "c2VjcmV0",
            "whsec_",
            "whsec_!!not-base64!!",
            "whsek_c2VjcmV0",
        ] {
            let err = Signer::new(&[Secret::new("whsec_c2VjcmV0"), Secret::new(bad)]).unwrap_err();
            assert!(
                matches!(err, HttpError::InvalidSigningSecret { index: 1 }),
                "{bad}"
            );
            assert_eq!(
                err.to_string(),
                "signing secret #1 is not \"whsec_\" followed by base64"
            );
        }
        assert!(Signer::new(&[Secret::new("whsec_c2VjcmV0")]).is_ok());
        assert!(Signer::new(&[Secret::new("whsec_c2VjcmV0ZQ")]).is_ok());
    }

    /// The example published with the Standard Webhooks specification.
    #[test]
    fn matches_the_published_example() {
        let signer = Signer::new(&[Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]).unwrap();
        let header = signer.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn signs_with_every_key() {
        let signer = Signer::new(&[
            Secret::new("whsec_a2V5LW9uZQ=="),
            Secret::new("whsec_a2V5LXR3bw=="),
        ])
        .unwrap();
        let header = signer.sign("msg_1", 1_700_000_000, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(
            parts
                .iter()
                .all(|p| p.starts_with("v1,") && p.len() == 3 + 44)
        );
        assert_ne!(parts[0], parts[1]);
        assert_ne!(header, signer.sign("msg_2", 1_700_000_000, b"{}"));
        assert_eq!(format!("{signer:?}"), "Signer(2 keys)");
    }
}
