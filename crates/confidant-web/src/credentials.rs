//! The page's own records, kept in IndexedDB beside the engine's (in the
//! `app` object store) and written in the **same** transactions as the
//! engine's commits when they must go together.
//!
//! A credential is a JSON message from the issuer. It is stored under its
//! connection and inbox number together with the deletion of its inbox
//! entry, in one transaction: a reload before it finds the message in the
//! inbox (reported again, stored then), a reload after finds the
//! credential and no inbox entry, so it is stored once and never lost. The
//! answer the holder owes is recorded in the same transaction
//! (`replied: false`) and marked once the connector has it, so a reload in
//! between answers again (at least once; the issuer reports a repeated
//! answer once).

use crate::error::{ErrorKind, WebError};
use sha2::{Digest as _, Sha256};

/// The key of the relay key's record (a 32-byte Ed25519 seed: the holder's
/// identity at the connector, separate from its X3DH identity key).
pub const RELAY_KEY: &str = "relay-key";
/// The key of the connector URL's record.
pub const CONNECTOR_URL: &str = "connector-url";
/// Credentials' keys start with this.
pub const CREDENTIAL_PREFIX: &str = "credential/";

/// A stored credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The connection it came on.
    pub connection_id: String,
    /// Its inbox number (unique per holder).
    pub sequence: u64,
    /// The JSON, as received.
    pub json: String,
    /// Whether the connector has the holder's answer.
    pub replied: bool,
}

impl Credential {
    /// Its record's key: unique per (connection, inbox number), in order.
    pub fn key(&self) -> String {
        format!(
            "{CREDENTIAL_PREFIX}{}/{:020}",
            self.connection_id, self.sequence
        )
    }

    /// The record (JSON).
    pub fn encode(&self) -> String {
        serde_json::json!({
            "connection_id": self.connection_id,
            "sequence": self.sequence,
            "json": self.json,
            "replied": self.replied,
        })
        .to_string()
    }

    /// Reads a record written by [`Credential::encode`].
    pub fn decode(text: &str) -> Result<Self, WebError> {
        let damaged = || WebError::new(ErrorKind::Storage, "a stored credential is damaged");
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| damaged())?;
        Ok(Self {
            connection_id: value
                .get("connection_id")
                .ok_or_else(damaged)?
                .as_str()
                .ok_or_else(damaged)?
                .to_owned(),
            sequence: value
                .get("sequence")
                .ok_or_else(damaged)?
                .as_u64()
                .ok_or_else(damaged)?,
            json: value
                .get("json")
                .ok_or_else(damaged)?
                .as_str()
                .ok_or_else(damaged)?
                .to_owned(),
            replied: value
                .get("replied")
                .ok_or_else(damaged)?
                .as_bool()
                .ok_or_else(damaged)?,
        })
    }

    /// The answer the holder sends for it: `received credential HASH`, as
    /// the terminal holder does.
    pub fn reply(&self) -> String {
        format!("received credential {}", short_hash(&self.json))
    }
}

/// The first 8 hex digits of the SHA-256 of `json` (as the terminal
/// holder prints them).
pub fn short_hash(json: &str) -> String {
    let digest = Sha256::digest(json.as_bytes());
    hex::encode(digest.get(..4).unwrap_or_default())
}

/// Whether `bytes` are a JSON credential: `Ok(text)`, or why not.
pub fn parse_credential(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    serde_json::from_str::<serde_json::Value>(text).map_err(|error| error.to_string())?;
    Ok(text.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_and_keys_sort_by_inbox_number() {
        let credential = Credential {
            connection_id: "c-abc".into(),
            sequence: 9,
            json: r#"{"name":"Ada \"A\""}"#.into(),
            replied: false,
        };
        assert_eq!(
            Credential::decode(&credential.encode()).unwrap(),
            credential
        );
        let later = Credential {
            sequence: 10,
            ..credential.clone()
        };
        assert!(credential.key() < later.key());
        assert!(Credential::decode("{}").is_err());
        assert!(Credential::decode("not json").is_err());
        assert_eq!(
            credential.reply(),
            format!("received credential {}", short_hash(&credential.json))
        );
        assert_eq!(short_hash("").len(), 8);
    }

    #[test]
    fn only_json_is_a_credential() {
        assert!(parse_credential(br#"{"a":1}"#).is_ok());
        assert!(parse_credential(b"hello").is_err());
        assert!(parse_credential(&[0xff, 0xfe]).is_err());
    }
}
