//! Request authentication: every call but `GetConnectionTokenInfo` and
//! `GetConnectorInfo` is signed with the caller's Ed25519 key over the
//! connector's audience, the method, a fresh nonce and the request's
//! protobuf encoding (see [`signed_bytes`] and `docs/connector.md` for the
//! exact bytes).

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// Domain separation of the signature (v2: the audience is signed, and
/// every field is length-prefixed).
pub const SIGNATURE_CONTEXT: &[u8] = b"confidant-connector-v2";
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

/// The bytes a request's signature covers: five fields, each as its length
/// (4 bytes, big-endian) followed by its bytes, in this order:
/// [`SIGNATURE_CONTEXT`], the connector's `audience` (UTF-8), the full gRPC
/// `method` path (UTF-8), the 24-byte `nonce`, and the `request`'s protobuf
/// encoding.
///
/// The audience names the connector, so a request signed for one connector
/// is refused by every other; the method names the call, so a request for
/// one call cannot be replayed as another.
pub fn signed_bytes(
    audience: &str,
    method: &str,
    nonce: &[u8; NONCE_LEN],
    request: &[u8],
) -> Vec<u8> {
    let fields: [&[u8]; 5] = [
        SIGNATURE_CONTEXT,
        audience.as_bytes(),
        method.as_bytes(),
        nonce,
        request,
    ];
    let mut bytes = Vec::with_capacity(fields.iter().map(|field| 4 + field.len()).sum());
    for field in fields {
        // A field longer than 4 GiB cannot reach the connector (its
        // decoding limit is far below); saturating keeps this total.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(field);
    }
    bytes
}

/// Longest audience a connector announces or accepts, in bytes.
pub const MAX_AUDIENCE_LEN: usize = 256;

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
        let mut random = [0u8; NONCE_LEN - 8];
        getrandom::fill(&mut random).map_err(|error| SignError(error.to_string()))?;
        let mut nonce = [0u8; NONCE_LEN];
        let (clock, rest) = nonce.split_at_mut(8);
        clock.copy_from_slice(&now_ms().to_be_bytes());
        rest.copy_from_slice(&random);
        Ok(nonce)
    }

    /// Wraps `message` in a request for the connector named `audience`
    /// (what its `GetConnectorInfo` announces) carrying the signature
    /// metadata.
    pub fn sign<T: prost::Message>(
        &self,
        audience: &str,
        method: &str,
        message: T,
    ) -> Result<tonic::Request<T>, SignError> {
        let nonce = Self::nonce()?;
        let signature = self.key.sign(&signed_bytes(
            audience,
            method,
            &nonce,
            &message.encode_to_vec(),
        ));
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
    /// The signature does not verify (over this connector's audience).
    #[error("the signature does not verify for this connector (audience {0:?})")]
    BadSignature(String),
    /// The nonce's clock is too far from the connector's.
    #[error("the nonce's clock is more than five minutes from the connector's")]
    Stale,
    /// The nonce was already accepted.
    #[error("the nonce was already used")]
    Replayed,
}

/// The authentication metadata of a request, decoded but not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthMetadata {
    /// The claimed caller.
    pub party: PartyKey,
    /// The nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The signature.
    pub signature: [u8; 64],
}

/// Longest metadata value decoded (the longest valid one, the signature, is
/// 86 characters): a longer one is refused before it is decoded.
const MAX_METADATA_VALUE_LEN: usize = 128;

/// Decodes the three authentication entries from raw metadata values (the
/// header values as bytes), without checking the signature.
pub fn parse_metadata(
    public_key: Option<&[u8]>,
    nonce: Option<&[u8]>,
    signature: Option<&[u8]>,
) -> Result<AuthMetadata, AuthError> {
    fn field<const N: usize>(
        value: Option<&[u8]>,
        name: &'static str,
    ) -> Result<[u8; N], AuthError> {
        value
            .filter(|value| value.len() <= MAX_METADATA_VALUE_LEN)
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(unb64)
            .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
            .ok_or(AuthError::Malformed(name))
    }
    Ok(AuthMetadata {
        party: field(public_key, PUBLIC_KEY_HEADER)?,
        nonce: field(nonce, NONCE_HEADER)?,
        signature: field(signature, SIGNATURE_HEADER)?,
    })
}

/// The clock (milliseconds) a nonce carries in its first 8 bytes.
pub fn nonce_clock(nonce: &[u8; NONCE_LEN]) -> u64 {
    nonce
        .first_chunk::<8>()
        .map_or(0, |clock| u64::from_be_bytes(*clock))
}

/// Checks a request's signature for the connector named `audience` (not
/// yet its nonce's freshness in the replay table: that is the store's job,
/// in the request's transaction).
pub fn verify(
    metadata: &MetadataMap,
    audience: &str,
    method: &str,
    request: &[u8],
    now_ms: u64,
) -> Result<Verified, AuthError> {
    let raw = |name: &'static str| metadata.get(name).map(AsciiMetadataValue::as_bytes);
    let AuthMetadata {
        party,
        nonce,
        signature,
    } = parse_metadata(
        raw(PUBLIC_KEY_HEADER),
        raw(NONCE_HEADER),
        raw(SIGNATURE_HEADER),
    )?;
    let key =
        VerifyingKey::from_bytes(&party).map_err(|_| AuthError::Malformed(PUBLIC_KEY_HEADER))?;
    if key.is_weak() {
        return Err(AuthError::Malformed(PUBLIC_KEY_HEADER));
    }
    key.verify_strict(
        &signed_bytes(audience, method, &nonce, request),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| AuthError::BadSignature(audience.to_owned()))?;
    let clock = nonce_clock(&nonce);
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
    const AUDIENCE: &str = "confidant-connector:test";
    fn bad() -> AuthError {
        AuthError::BadSignature(AUDIENCE.into())
    }

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
        let signed = signer.sign(AUDIENCE, METHOD, request()).unwrap();
        let bytes = prost::Message::encode_to_vec(signed.get_ref());
        let verified = verify(signed.metadata(), AUDIENCE, METHOD, &bytes, now_ms()).unwrap();
        assert_eq!(verified.party, signer.public_key());

        // Another method, other bytes, another clock: refused.
        assert_eq!(
            verify(
                signed.metadata(),
                AUDIENCE,
                "/confidant.connector.v1.Connector/RevokeConnection",
                &bytes,
                now_ms()
            ),
            Err(bad())
        );
        let mut other = request();
        other.message = vec![1, 2, 4];
        assert_eq!(
            verify(
                signed.metadata(),
                AUDIENCE,
                METHOD,
                &prost::Message::encode_to_vec(&other),
                now_ms()
            ),
            Err(bad())
        );
        assert_eq!(
            verify(
                signed.metadata(),
                AUDIENCE,
                METHOD,
                &bytes,
                now_ms() + 301_000
            ),
            Err(AuthError::Stale)
        );
        // Missing and malformed entries.
        let mut missing = signed.metadata().clone();
        missing.remove(SIGNATURE_HEADER);
        assert_eq!(
            verify(&missing, AUDIENCE, METHOD, &bytes, now_ms()),
            Err(AuthError::Malformed(SIGNATURE_HEADER))
        );
        let mut short = signed.metadata().clone();
        short.insert(NONCE_HEADER, AsciiMetadataValue::from_static("AAAA"));
        assert_eq!(
            verify(&short, AUDIENCE, METHOD, &bytes, now_ms()),
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
            verify(&impostor, AUDIENCE, METHOD, &bytes, now_ms()),
            Err(bad())
        );
        // Another connector's audience.
        assert_eq!(
            verify(
                signed.metadata(),
                "confidant-connector:other",
                METHOD,
                &bytes,
                now_ms()
            ),
            Err(AuthError::BadSignature("confidant-connector:other".into()))
        );
    }

    #[test]
    fn signed_bytes_are_length_prefixed_fields() {
        let nonce = [9u8; NONCE_LEN];
        let bytes = signed_bytes("aud", "/m", &nonce, &[1, 2]);
        let mut expected = Vec::new();
        for field in [SIGNATURE_CONTEXT, b"aud", b"/m", &nonce, &[1, 2]] {
            expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
            expected.extend_from_slice(field);
        }
        assert_eq!(bytes, expected);
        // The example in docs/connector.md, byte for byte.
        let request =
            prost::Message::encode_to_vec(&crate::proto::GenerateConnectionTokenRequest {
                count: 1,
            });
        let mut documented = Vec::new();
        documented.extend_from_slice(&[0, 0, 0, 0x16]);
        documented.extend_from_slice(b"confidant-connector-v2");
        documented.extend_from_slice(&[0, 0, 0, 0x17]);
        documented.extend_from_slice(b"confidant-connector:abc");
        documented.extend_from_slice(&[0, 0, 0, 0x39]);
        documented.extend_from_slice(b"/confidant.connector.v1.Connector/GenerateConnectionToken");
        documented.extend_from_slice(&[0, 0, 0, 0x18]);
        documented.extend_from_slice(&nonce);
        documented.extend_from_slice(&[0, 0, 0, 2, 0x08, 0x01]);
        assert_eq!(
            signed_bytes(
                "confidant-connector:abc",
                "/confidant.connector.v1.Connector/GenerateConnectionToken",
                &nonce,
                &request
            ),
            documented
        );
        // Moving a byte from one field to the next changes the bytes.
        assert_ne!(
            signed_bytes("aud/", "m", &nonce, &[]),
            signed_bytes("aud", "/m", &nonce, &[])
        );
    }
}
