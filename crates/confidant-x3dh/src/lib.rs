//! # confidant-x3dh
//!
//! X3DH key agreement as the [Signal specification] defines it, with Ed25519
//! identity keys, X25519 pre-keys and HKDF-SHA-256.
//!
//! In Confidant the **holder** (wallet) is the initiator, Alice; the
//! **issuer** is the responder, Bob. The issuer sends its [`PreKeyBundle`];
//! the holder checks it against the identity key from the invitation (QR
//! code), runs X3DH and answers with an initial message
//! ([`InitialMessageHeader`] plus the first sealed message); the issuer
//! derives the same secret from it.
//!
//! ## The computation
//!
//! * `Encode(PK)` is the raw 32-byte public key: the compressed Edwards point
//!   for an Ed25519 identity key, the Montgomery u-coordinate for an X25519
//!   key.
//! * Identity keys `IK` are Ed25519. For Diffie-Hellman they go through the
//!   birational map: our own secret is the clamped first half of SHA-512 of
//!   the seed ([`ed25519_dalek::SigningKey::to_scalar_bytes`]), the peer's
//!   public key is the Montgomery form of its Edwards point. Identity keys
//!   that do not decode canonically or have small order are refused.
//! * The signed pre-key carries `Sig(IK_B, Encode(SPK_B))`, an Ed25519
//!   signature verified with `verify_strict`.
//! * With `EK_A` the initiator's ephemeral key and `OPK_B` the optional
//!   one-time pre-key:
//!
//!   ```text
//!   DH1 = DH(IK_A, SPK_B)
//!   DH2 = DH(EK_A, IK_B)
//!   DH3 = DH(EK_A, SPK_B)
//!   DH4 = DH(EK_A, OPK_B)          only when a one-time pre-key is used
//!   SK  = HKDF-SHA-256(salt = 0x00 * 32,
//!                      IKM  = 0xFF * 32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4],
//!                      info = X3dhConfig::info, default "Confidant X3DH v1"),
//!         32 bytes
//!   AD  = Encode(IK_A) ‖ Encode(IK_B) ‖ X3dhConfig::associated_data_appendix
//!   ```
//!
//! * A DH output of all zeros (a low-order peer key) is refused with
//!   [`X3dhError::NonContributoryDh`].
//!
//! ## Order of checks on the initiator
//!
//! 1. the bundle's identity key equals the expected one
//!    ([`X3dhError::IdentityMismatch`]), before anything else;
//! 2. the signed pre-key signature ([`X3dhError::BadSignature`]);
//! 3. the suite is one the bundle offers (an empty list stands for the
//!    default suite 1) ([`X3dhError::SuiteNotOffered`]);
//! 4. every DH output is contributory ([`X3dhError::NonContributoryDh`]).
//!
//! ## One-time pre-keys
//!
//! [`ResponderKeys::respond`] does not delete the one-time pre-key it used;
//! it reports its id in [`AgreedSecret::one_time_pre_key_id`], so that the
//! storage layer deletes it in the transaction that creates the session.
//! [`ResponderKeys::consume_one_time_pre_key`] removes it from memory, and
//! [`ResponderKeys::respond_and_consume`] does both. Once consumed, an
//! initial message naming it fails with [`X3dhError::UnknownOneTimePreKey`].
//!
//! ## Secrets
//!
//! Every secret lives in a dalek type that is wiped on drop; intermediate
//! copies are held in [`zeroize::Zeroizing`]. No `Debug` output here
//! contains secret bytes.
//!
//! ## A full handshake
//!
//! ```
//! use confidant_core::SuiteId;
//! use confidant_x3dh::{
//!     IdentityKeyPair, InitialMessageHeader, OneTimePreKey, PreKeyBundle, ResponderKeys,
//!     SignedPreKey, X3dhConfig,
//! };
//!
//! let config = X3dhConfig::default();
//! let suite = SuiteId::AES_256_GCM_SHA256_COUNTER;
//!
//! // Issuer (responder): identity, signed pre-key, one-time pre-key.
//! let issuer_identity = IdentityKeyPair::generate();
//! let signed_pre_key = SignedPreKey::generate(&issuer_identity, 1);
//! let mut issuer = ResponderKeys::new(issuer_identity, signed_pre_key)?;
//! issuer.add_one_time_pre_key(OneTimePreKey::generate(7))?;
//! let invitation = *issuer.identity_public_key(); // goes into the QR code
//! let bundle_bytes = issuer.bundle_with_one_time_pre_key(7, &[suite])?.to_bytes();
//!
//! // Holder (initiator): check the bundle against the invitation, agree.
//! let holder = IdentityKeyPair::generate();
//! let bundle = PreKeyBundle::from_bytes(&bundle_bytes)?.verify(&invitation)?;
//! let (holder_secret, header) = bundle.agree(&config, &holder, suite)?;
//! let initial_bytes = header.to_bytes(None); // the session layer adds its first message
//!
//! // Issuer: derive the same secret, and retire the one-time pre-key.
//! let header = InitialMessageHeader::from_bytes(&initial_bytes)?;
//! let issuer_secret = issuer.respond_and_consume(&config, &header)?;
//!
//! assert_eq!(holder_secret.secret(), issuer_secret.secret());
//! assert_eq!(holder_secret.associated_data(), issuer_secret.associated_data());
//! assert_eq!(issuer_secret.one_time_pre_key_id(), Some(7));
//! assert!(issuer.respond(&config, &header).is_err()); // the one-time pre-key is gone
//! # Ok::<(), confidant_x3dh::X3dhError>(())
//! ```
//!
//! The same exchange through the wire types and the [`KeyAgreement`]
//! trait is shown on [`X3dh`].
//!
//! [Signal specification]: https://signal.org/docs/specifications/x3dh/
//! [`AgreedSecret::one_time_pre_key_id`]: confidant_core::AgreedSecret::one_time_pre_key_id
//! [`KeyAgreement`]: confidant_core::KeyAgreement

mod agreement;
mod bundle;
mod error;
mod initial;
mod keys;
mod plugin;
mod responder;

pub use agreement::{DEFAULT_INFO, DhOutputs, X3dhConfig};
pub use bundle::{MAX_BUNDLE_LEN, PreKeyBundle, PublicOneTimePreKey, VerifiedPreKeyBundle};
pub use error::{DhStep, X3dhError};
pub use initial::{InitialMessageHeader, MAX_INITIAL_MESSAGE_LEN};
pub use keys::{
    EphemeralKey, IdentityKeyPair, IdentityPublicKey, OneTimePreKey, PUBLIC_KEY_LEN,
    SECRET_KEY_LEN, SIGNATURE_LEN, SignedPreKey, X25519PublicKey,
};
pub use plugin::X3dh;
pub use responder::ResponderKeys;

/// Re-exported so callers need not depend on `confidant-core` for the result
/// type.
pub use confidant_core::AgreedSecret;
