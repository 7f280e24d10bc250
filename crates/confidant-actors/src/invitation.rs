//! Invitations: what the inviter shows (as a QR code) and the invitee
//! scans.
//!
//! An invitation binds three things: where the relay is, the single-use
//! token to join the connection with, and the inviter's identity key. The
//! invitee refuses any bundle whose identity key is not the invitation's,
//! so a relay that swaps the bundle is caught.
//!
//! Its text form is `confidant1:` followed by base64url (no padding) of
//! `relay length (u16 BE) ‖ relay ‖ token length (u16 BE) ‖ token ‖ identity key (32)`.

use base64::Engine as _;

const PREFIX: &str = "confidant1:";
const MAX_FIELD: usize = 1024;

/// An invitation to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Where the relay is (for the gRPC connector, its URL).
    pub relay: String,
    /// The relay's single-use token.
    pub token: String,
    /// The inviter's Ed25519 identity key.
    pub identity_key: [u8; 32],
}

/// An invitation's text is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed invitation: {0}")]
pub struct InvitationError(&'static str);

impl Invitation {
    /// The text form (for a QR code or a copy-and-paste).
    pub fn to_text(&self) -> String {
        let mut bytes = Vec::with_capacity(4 + self.relay.len() + self.token.len() + 32);
        for field in [self.relay.as_bytes(), self.token.as_bytes()] {
            let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend(field.iter().take(usize::from(len)));
        }
        bytes.extend_from_slice(&self.identity_key);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }

    /// Reads the text form.
    pub fn from_text(text: &str) -> Result<Self, InvitationError> {
        let body = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(InvitationError("it does not start with `confidant1:`"))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| InvitationError("not base64url"))?;
        let mut rest = bytes.as_slice();
        let mut field = |name: &'static str| -> Result<String, InvitationError> {
            let (len, tail) = rest
                .split_first_chunk::<2>()
                .ok_or(InvitationError("truncated"))?;
            let len = usize::from(u16::from_be_bytes(*len));
            if len == 0 || len > MAX_FIELD {
                return Err(InvitationError(name));
            }
            let (value, tail) = tail
                .split_at_checked(len)
                .ok_or(InvitationError("truncated"))?;
            rest = tail;
            String::from_utf8(value.to_vec()).map_err(|_| InvitationError(name))
        };
        let relay = field("bad relay field")?;
        let token = field("bad token field")?;
        let identity_key: [u8; 32] = rest
            .try_into()
            .map_err(|_| InvitationError("the identity key is not 32 bytes"))?;
        Ok(Self {
            relay,
            token,
            identity_key,
        })
    }
}

impl std::fmt::Display for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl std::str::FromStr for Invitation {
    type Err = InvitationError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_text(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_every_truncation_is_refused() {
        let invitation = Invitation {
            relay: "http://127.0.0.1:50051".into(),
            token: "q1w2e3r4t5y6u7i8o9p0aa".into(),
            identity_key: [0x5A; 32],
        };
        let text = invitation.to_text();
        assert!(text.starts_with("confidant1:"));
        assert_eq!(Invitation::from_text(&text).unwrap(), invitation);
        assert_eq!(text.parse::<Invitation>().unwrap(), invitation);
        let body = &text[PREFIX.len()..];
        for cut in 0..body.len() {
            let shorter = format!("{PREFIX}{}", &body[..cut]);
            assert!(Invitation::from_text(&shorter).is_err(), "{cut}");
        }
        assert!(Invitation::from_text("confidant2:AAAA").is_err());
        assert!(Invitation::from_text(&format!("{text}AA")).is_err());
    }
}
