//! Invitations: what the inviter shows (as a QR code) and the invitee
//! scans.
//!
//! An invitation binds three things: where the relay is, the single-use
//! token to join the connection with, and the inviter's identity key. The
//! invitee refuses any bundle whose identity key is not the invitation's,
//! so a relay that swaps the bundle is caught.
//!
//! ## Text form, version 3
//!
//! ```text
//! "confidant3:" ‖ base64url-no-pad(payload ‖ checksum)
//! payload  = relay length (u16 BE) ‖ relay (UTF-8)
//!          ‖ token length (u16 BE) ‖ token (UTF-8)
//!          ‖ identity key (32 bytes, Ed25519)
//!          ‖ features (1 byte: bit 0 = the inviter has the post-quantum
//!            hybrid and requires it; the other bits are written 0 and
//!            ignored when read)
//! checksum = the first 4 bytes of SHA-256("confidant3:" ‖ payload)
//! ```
//!
//! Each length is 1 to 1,024. The checksum catches a mistyped or truncated
//! text before the invitee spends the single-use token on it; it is not an
//! authenticator (the invitation's own channel, a QR code shown in person,
//! is what makes it authentic, and so also the hybrid bit: a relay cannot
//! clear it). The version is the number in the prefix. Version 2
//! (`confidant2:`, the same payload without the features byte, checksum
//! over `"confidant2:" ‖ payload`) is still read, as an inviter without
//! the hybrid; a text with another `confidantN:` prefix (version 1 had no
//! checksum) is refused as [`InvitationError::UnsupportedVersion`].
//! Whitespace anywhere in the text (a paste wrapped over lines) is
//! ignored. `docs/apps.md` has a worked example.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The version this code writes (it also reads version 2).
pub const INVITATION_VERSION: u32 = 3;
const PREFIX: &str = "confidant3:";
const PREFIX_V2: &str = "confidant2:";
/// Bit 0 of the features byte: the inviter has the hybrid.
const FEATURE_HYBRID: u8 = 0x01;
const MAX_FIELD: usize = 1024;
const CHECKSUM_LEN: usize = 4;

/// An invitation to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Where the relay is (for the gRPC connector, its URL).
    pub relay: String,
    /// The relay's single-use token.
    pub token: String,
    /// The inviter's Ed25519 identity key.
    pub identity_key: [u8; 32],
    /// The inviter has the post-quantum hybrid (X3DH + ML-KEM-768) and
    /// requires it: the invitee refuses a bundle without it (a relay that
    /// stripped it), whatever its own settings. `false` for a version 2
    /// invitation.
    pub hybrid: bool,
}

/// An invitation's text cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvitationError {
    /// The text is not a Confidant invitation at all.
    #[error("not a Confidant invitation (an invitation starts with `{PREFIX}`)")]
    NotAnInvitation,
    /// An invitation of another version of the format.
    #[error(
        "unsupported invitation version {0}: this program reads version {INVITATION_VERSION} \
         (`{PREFIX}…`); ask the issuer for a new invitation"
    )]
    UnsupportedVersion(String),
    /// The text was cut short, mistyped or otherwise changed: its checksum
    /// or its structure does not hold.
    #[error(
        "incomplete or damaged invitation ({0}): copy all of it again, or scan its QR code again"
    )]
    Damaged(&'static str),
    /// A field of an invitation being written is empty or longer than the
    /// format allows (1 to 1,024 bytes).
    #[error("an invitation's {0} must be 1 to 1024 bytes long")]
    FieldLength(&'static str),
}

impl Invitation {
    /// The text form (for a QR code or a copy-and-paste). An invitation
    /// whose relay or token is empty or longer than 1,024 bytes has none:
    /// [`Invitation::try_to_text`] says why.
    pub fn to_text(&self) -> String {
        self.try_to_text().unwrap_or_default()
    }

    /// The text form, or why this invitation has none.
    pub fn try_to_text(&self) -> Result<String, InvitationError> {
        let mut bytes =
            Vec::with_capacity(4 + self.relay.len() + self.token.len() + 32 + CHECKSUM_LEN);
        for (name, field) in [("relay", &self.relay), ("token", &self.token)] {
            if field.is_empty() || field.len() > MAX_FIELD {
                return Err(InvitationError::FieldLength(name));
            }
            let len = u16::try_from(field.len()).map_err(|_| InvitationError::FieldLength(name))?;
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(field.as_bytes());
        }
        bytes.extend_from_slice(&self.identity_key);
        bytes.push(if self.hybrid { FEATURE_HYBRID } else { 0 });
        let checksum = checksum(PREFIX, &bytes);
        bytes.extend_from_slice(&checksum);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// Reads the text form, checking its version and checksum.
    pub fn from_text(text: &str) -> Result<Self, InvitationError> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let (prefix, body) = match (text.strip_prefix(PREFIX), text.strip_prefix(PREFIX_V2)) {
            (Some(body), _) => (PREFIX, body),
            (None, Some(body)) => (PREFIX_V2, body),
            (None, None) => return Err(version_error(&text)),
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| InvitationError::Damaged("not base64url, or cut short"))?;
        let (payload, sum) = bytes
            .split_last_chunk::<CHECKSUM_LEN>()
            .ok_or(InvitationError::Damaged("too short"))?;
        if checksum(prefix, payload) != *sum {
            return Err(InvitationError::Damaged("the checksum does not match"));
        }
        // The checksum held, so what follows only fails for a text that was
        // written wrongly, not damaged on the way.
        let mut rest = payload;
        let mut field = || -> Result<String, InvitationError> {
            let (len, tail) = rest
                .split_first_chunk::<2>()
                .ok_or(InvitationError::Damaged("too short"))?;
            let len = usize::from(u16::from_be_bytes(*len));
            if len == 0 || len > MAX_FIELD {
                return Err(InvitationError::Damaged("a field length is out of range"));
            }
            let (value, tail) = tail
                .split_at_checked(len)
                .ok_or(InvitationError::Damaged("too short"))?;
            rest = tail;
            String::from_utf8(value.to_vec())
                .map_err(|_| InvitationError::Damaged("a field is not UTF-8"))
        };
        let relay = field()?;
        let token = field()?;
        let (identity_key, features) = if prefix == PREFIX {
            let (&features, key) = rest
                .split_last()
                .ok_or(InvitationError::Damaged("too short"))?;
            (key, features)
        } else {
            (rest, 0)
        };
        let identity_key: [u8; 32] = identity_key
            .try_into()
            .map_err(|_| InvitationError::Damaged("the identity key is not 32 bytes"))?;
        Ok(Self {
            relay,
            token,
            identity_key,
            hybrid: features & FEATURE_HYBRID != 0,
        })
    }
}

/// The first bytes of SHA-256 over the prefix and the payload.
fn checksum(prefix: &str, payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::new()
        .chain_update(prefix.as_bytes())
        .chain_update(payload)
        .finalize();
    let mut sum = [0; CHECKSUM_LEN];
    for (out, byte) in sum.iter_mut().zip(digest) {
        *out = byte;
    }
    sum
}

/// Why a text without the current prefix is refused: another version, or
/// not an invitation.
fn version_error(text: &str) -> InvitationError {
    if let Some(rest) = text.strip_prefix("confidant")
        && let Some((version, _)) = rest.split_once(':')
        && !version.is_empty()
        && version.len() <= 9
        && version.bytes().all(|byte| byte.is_ascii_digit())
    {
        return InvitationError::UnsupportedVersion(version.to_owned());
    }
    InvitationError::NotAnInvitation
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

    fn example() -> Invitation {
        Invitation {
            relay: "http://127.0.0.1:50051".into(),
            token: "q1w2e3r4t5y6u7i8o9p0aa".into(),
            identity_key: [0x5A; 32],
            hybrid: true,
        }
    }

    #[test]
    fn text_round_trips_and_every_truncation_is_refused_as_damaged() {
        let invitation = example();
        let text = invitation.to_text();
        assert!(text.starts_with("confidant3:"));
        assert_eq!(Invitation::from_text(&text).unwrap(), invitation);
        assert_eq!(text.parse::<Invitation>().unwrap(), invitation);
        let body = &text[PREFIX.len()..];
        for cut in 0..body.len() {
            let shorter = format!("{PREFIX}{}", &body[..cut]);
            let error = Invitation::from_text(&shorter).unwrap_err();
            assert!(
                matches!(error, InvitationError::Damaged(_)),
                "{cut}: {error}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with("incomplete or damaged invitation"),
                "{error}"
            );
        }
        assert!(matches!(
            Invitation::from_text(&format!("{text}AA")),
            Err(InvitationError::Damaged(_))
        ));
    }

    #[test]
    fn every_one_character_typo_is_refused() {
        let text = example().to_text();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for position in PREFIX.len()..text.len() {
            for replacement in alphabet.chars() {
                let mut typo: Vec<char> = text.chars().collect();
                if typo[position] == replacement {
                    continue;
                }
                typo[position] = replacement;
                let typo: String = typo.into_iter().collect();
                assert!(
                    matches!(
                        Invitation::from_text(&typo),
                        Err(InvitationError::Damaged(_))
                    ),
                    "{typo} was accepted"
                );
            }
        }
    }

    #[test]
    fn other_versions_and_other_texts_are_named() {
        // A version-1 text (the format before the checksum).
        let error =
            Invitation::from_text("confidant1:ABZodHRwOi8vMTI3LjAuMC4xOjUwMDUx").unwrap_err();
        assert_eq!(error, InvitationError::UnsupportedVersion("1".into()));
        assert!(
            error
                .to_string()
                .starts_with("unsupported invitation version 1"),
            "{error}"
        );
        assert_eq!(
            Invitation::from_text("confidant4:AAAA").unwrap_err(),
            InvitationError::UnsupportedVersion("4".into())
        );
        for other in [
            "",
            "hello",
            "confidant:AAAA",
            "confidantx:AAAA",
            "https://example",
        ] {
            assert_eq!(
                Invitation::from_text(other).unwrap_err(),
                InvitationError::NotAnInvitation,
                "{other}"
            );
        }
    }

    #[test]
    fn whitespace_from_a_wrapped_paste_is_ignored() {
        let invitation = example();
        let text = invitation.to_text();
        let (head, tail) = text.split_at(30);
        let wrapped = format!("  {head}\n  {tail}\r\n");
        assert_eq!(Invitation::from_text(&wrapped).unwrap(), invitation);
    }

    /// The layout, byte for byte, as `docs/apps.md` shows it: an
    /// independent implementation can check itself against this text.
    #[test]
    fn the_documented_example_is_what_the_code_writes() {
        let invitation = Invitation {
            relay: "http://127.0.0.1:50051".into(),
            token: "AAECAwQFBgcICQoLDA0ODw".into(),
            identity_key: core::array::from_fn(|i| u8::try_from(i).unwrap_or(0)),
            hybrid: true,
        };
        let text = invitation.to_text();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&text[PREFIX.len()..])
            .unwrap();
        let mut expected = vec![0, 22];
        expected.extend_from_slice(b"http://127.0.0.1:50051");
        expected.extend_from_slice(&[0, 22]);
        expected.extend_from_slice(b"AAECAwQFBgcICQoLDA0ODw");
        expected.extend(0u8..32);
        expected.push(0x01);
        let digest = Sha256::digest([b"confidant3:".as_slice(), &expected].concat());
        expected.extend_from_slice(&digest[..4]);
        assert_eq!(bytes, expected);
        assert_eq!(text, DOCUMENTED_EXAMPLE);
    }

    const DOCUMENTED_EXAMPLE: &str = "confidant3:ABZodHRwOi8vMTI3LjAuMC4xOjUwMDUxABZBQUVDQXdRRkJnY0lDUW9MREEwT0R3AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8BOoLfaw";

    /// Version 2 texts (before the features byte) are still read, as an
    /// inviter without the hybrid; the documented version 2 example.
    #[test]
    fn version_2_texts_are_read_as_classical() {
        let invitation = Invitation::from_text(VERSION_2_EXAMPLE).unwrap();
        assert_eq!(invitation.relay, "http://127.0.0.1:50051");
        assert_eq!(invitation.token, "AAECAwQFBgcICQoLDA0ODw");
        assert_eq!(invitation.identity_key[31], 31);
        assert!(!invitation.hybrid);
        // Its checksum is over the version 2 prefix: the same body under
        // the version 3 prefix is damaged, not misread.
        let moved = VERSION_2_EXAMPLE.replacen("confidant2:", "confidant3:", 1);
        assert!(matches!(
            Invitation::from_text(&moved),
            Err(InvitationError::Damaged(_))
        ));
    }

    const VERSION_2_EXAMPLE: &str = "confidant2:ABZodHRwOi8vMTI3LjAuMC4xOjUwMDUxABZBQUVDQXdRRkJnY0lDUW9MREEwT0R3AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh-eiuhR";

    #[test]
    fn the_hybrid_bit_round_trips_and_other_feature_bits_are_ignored() {
        let mut invitation = example();
        for hybrid in [false, true] {
            invitation.hybrid = hybrid;
            assert_eq!(
                Invitation::from_text(&invitation.to_text()).unwrap(),
                invitation
            );
        }
        // A writer from the future sets bit 1 too.
        let text = invitation.to_text();
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&text[PREFIX.len()..])
            .unwrap();
        bytes.truncate(bytes.len() - CHECKSUM_LEN);
        *bytes.last_mut().unwrap() = 0x03;
        let sum = checksum(PREFIX, &bytes);
        bytes.extend_from_slice(&sum);
        let future = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes)
        );
        assert_eq!(Invitation::from_text(&future).unwrap(), invitation);
    }

    #[test]
    fn fields_outside_the_format_have_no_text() {
        let mut invitation = example();
        invitation.relay = "x".repeat(MAX_FIELD + 1);
        assert_eq!(
            invitation.try_to_text(),
            Err(InvitationError::FieldLength("relay"))
        );
        invitation.relay = String::new();
        assert!(invitation.try_to_text().is_err());
    }
}
