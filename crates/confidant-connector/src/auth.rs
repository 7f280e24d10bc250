//! Request authentication: every call but `GetConnectionTokenInfo` is
//! signed with the caller's Ed25519 key over a fresh nonce, the method and
//! the request's protobuf encoding (see the `.proto` file for the exact
//! bytes).

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// Domain separation of the signature.
pub const SIGNATURE_CONTEXT: &[u8] = b"confidant-connector-v1";
/// Metadata key of the caller's public key.
pub const PUBLIC_KEY_HEADER: &str = "x-confidant-public-key";
/// Metadata key of the nonce.
pub const NONCE_HEADER: &str = "x-confidant-nonce";
/// Metadata key of the signature.
pub const SIGNATURE_HEADER: &str = "x-confidant-signature";
/// Nonce length: 8 bytes of clock (milliseconds, big-endian) and 16 random.
pub const NONCE_LEN: usize = 24;
/// How far a nonce's clock may be from the connector's.
pub const NONCE_WINDOW: Duration = Duration::from_secs(300);

/// A caller's identity at the connector: its Ed25519 public key.
pub type PartyKey = [u8; 32];

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The bytes a request's signature covers.
pub fn signed_bytes(method: &str, nonce: &[u8; NONCE_LEN], request: &[u8]) -> Vec<u8> {
    let mut bytes =
        Vec::with_capacity(SIGNATURE_CONTEXT.len() + method.len() + 2 + NONCE_LEN + request.len());
    bytes.extend_from_slice(SIGNATURE_CONTEXT);
    bytes.push(0);
    bytes.extend_from_slice(method.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(nonce);
    bytes.extend_from_slice(request);
    bytes
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

/// Signs requests with a party's key.
#[derive(Clone)]
pub struct RequestSigner {
    key: SigningKey,
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSigner")
            .field("public_key", &b64(&self.public_key()))
            .finish_non_exhaustive()
    }
}

/// Signing failed (no randomness for the nonce).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the request: {0}")]
pub struct SignError(String);

impl RequestSigner {
    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The caller's public key.
    pub fn public_key(&self) -> PartyKey {
        self.key.verifying_key().to_bytes()
    }

    /// A fresh nonce: the clock, then 16 random bytes.
    pub fn nonce() -> Result<[u8; NONCE_LEN], SignError> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&now_ms().to_be_bytes());
        getrandom::fill(&mut nonce[8..]).map_err(|error| SignError(error.to_string()))?;
        Ok(nonce)
    }

    /// Wraps `message` in a request carrying the signature metadata.
    pub fn sign<T: prost::Message>(
        &self,
        method: &str,
        message: T,
    ) -> Result<tonic::Request<T>, SignError> {
        let nonce = Self::nonce()?;
        let signature = self
            .key
            .sign(&signed_bytes(method, &nonce, &message.encode_to_vec()));
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        for (key, value) in [
            (PUBLIC_KEY_HEADER, b64(&self.public_key())),
            (NONCE_HEADER, b64(&nonce)),
            (SIGNATURE_HEADER, b64(&signature.to_bytes())),
        ] {
            let value = AsciiMetadataValue::try_from(value)
                .map_err(|error| SignError(error.to_string()))?;
            metadata.insert(key, value);
        }
        Ok(request)
    }
}

/// A request's verified signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Who signed it.
    pub party: PartyKey,
    /// Its nonce, to be accepted once.
    pub nonce: [u8; NONCE_LEN],
    /// When the nonce expires from the replay table (milliseconds).
    pub expires_ms: u64,
}

/// Why a request's authentication was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A metadata entry is missing or malformed.
    #[error("missing or malformed {0}")]
    Malformed(&'static str),
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// The nonce's clock is too far from the connector's.
    #[error("the nonce's clock is more than five minutes from the connector's")]
    Stale,
    /// The nonce was already accepted.
    #[error("the nonce was already used")]
    Replayed,
}

/// Checks a request's signature (not yet its nonce's freshness in the
/// replay table: that is the store's job, in the request's transaction).
pub fn verify(
    metadata: &MetadataMap,
    method: &str,
    request: &[u8],
    now_ms: u64,
) -> Result<Verified, AuthError> {
    let field = |name: &'static str| -> Result<Vec<u8>, AuthError> {
        metadata
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(unb64)
            .ok_or(AuthError::Malformed(name))
    };
    let party: PartyKey = field(PUBLIC_KEY_HEADER)?
        .try_into()
        .map_err(|_| AuthError::Malformed(PUBLIC_KEY_HEADER))?;
    let nonce: [u8; NONCE_LEN] = field(NONCE_HEADER)?
        .try_into()
        .map_err(|_| AuthError::Malformed(NONCE_HEADER))?;
    let signature: [u8; 64] = field(SIGNATURE_HEADER)?
        .try_into()
        .map_err(|_| AuthError::Malformed(SIGNATURE_HEADER))?;
    let key =
        VerifyingKey::from_bytes(&party).map_err(|_| AuthError::Malformed(PUBLIC_KEY_HEADER))?;
    if key.is_weak() {
        return Err(AuthError::Malformed(PUBLIC_KEY_HEADER));
    }
    key.verify_strict(
        &signed_bytes(method, &nonce, request),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| AuthError::BadSignature)?;
    let mut clock = [0u8; 8];
    clock.copy_from_slice(&nonce[..8]);
    let clock = u64::from_be_bytes(clock);
    let window = u64::try_from(NONCE_WINDOW.as_millis()).unwrap_or(u64::MAX);
    if clock.abs_diff(now_ms) > window {
        return Err(AuthError::Stale);
    }
    Ok(Verified {
        party,
        nonce,
        expires_ms: clock.saturating_add(window),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::proto::SendMessageRequest;

    const METHOD: &str = "/confidant.connector.v1.Connector/SendMessage";

    fn request() -> SendMessageRequest {
        SendMessageRequest {
            connection_id: "c1".into(),
            message: vec![1, 2, 3],
            client_message_id: vec![],
        }
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_is_refused() {
        let signer = RequestSigner::from_seed(&[7; 32]);
        let signed = signer.sign(METHOD, request()).unwrap();
        let bytes = prost::Message::encode_to_vec(signed.get_ref());
        let verified = verify(signed.metadata(), METHOD, &bytes, now_ms()).unwrap();
        assert_eq!(verified.party, signer.public_key());

        // Another method, other bytes, another clock: refused.
        assert_eq!(
            verify(
                signed.metadata(),
                "/confidant.connector.v1.Connector/RevokeConnection",
                &bytes,
                now_ms()
            ),
            Err(AuthError::BadSignature)
        );
        let mut other = request();
        other.message = vec![1, 2, 4];
        assert_eq!(
            verify(
                signed.metadata(),
                METHOD,
                &prost::Message::encode_to_vec(&other),
                now_ms()
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(signed.metadata(), METHOD, &bytes, now_ms() + 301_000),
            Err(AuthError::Stale)
        );
        // Missing and malformed entries.
        let mut missing = signed.metadata().clone();
        missing.remove(SIGNATURE_HEADER);
        assert_eq!(
            verify(&missing, METHOD, &bytes, now_ms()),
            Err(AuthError::Malformed(SIGNATURE_HEADER))
        );
        let mut short = signed.metadata().clone();
        short.insert(NONCE_HEADER, AsciiMetadataValue::from_static("AAAA"));
        assert_eq!(
            verify(&short, METHOD, &bytes, now_ms()),
            Err(AuthError::Malformed(NONCE_HEADER))
        );
        // Someone else's key with this signature.
        let mut impostor = signed.metadata().clone();
        impostor.insert(
            PUBLIC_KEY_HEADER,
            AsciiMetadataValue::try_from(b64(&RequestSigner::from_seed(&[8; 32]).public_key()))
                .unwrap(),
        );
        assert_eq!(
            verify(&impostor, METHOD, &bytes, now_ms()),
            Err(AuthError::BadSignature)
        );
    }
}
