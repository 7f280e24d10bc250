//! # confidant-x3dh-mlkem768
//!
//! Post-quantum hybrid key agreement for Confidant: X3DH + ML-KEM-768,
//! following Signal's [PQXDH specification] (revision 3), adapted to
//! Confidant's Ed25519 identity keys as `confidant-x3dh` is. The plugin is
//! [`X3dhMlKem768`]; ML-KEM-768 (FIPS 203) is RustCrypto's `ml-kem`.
//!
//! ## The computation
//!
//! The responder's (issuer's) bundle is the classical X3DH bundle plus a
//! signed ML-KEM-768 pre-key `PQPK_B`: a one-time KEM pre-key when one is
//! left, else the signed last-resort one. With `EK_A` the initiator's
//! ephemeral key and `OPK_B` the optional one-time pre-key:
//!
//! ```text
//! EncodeKEM(PQPK_B) = 0x01 (ML-KEM-768) ‖ ek (1184 bytes)
//! Sig(IK_B, EncodeKEM(PQPK_B))                  verified strictly
//! DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)
//! DH4 = DH(EK_A, OPK_B)                         only with a one-time pre-key
//! (CT, SS) = ML-KEM-768.Encaps(PQPK_B)          CT: 1088 bytes, SS: 32 bytes
//! SK = HKDF-SHA-256(salt = 0x00 * 32,
//!                   IKM  = 0xFF * 32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ SS,
//!                   info = "Confidant X3DH-25519-MLKEM768-SHA-256 v1"), 32 bytes
//! AD = Encode(IK_A) ‖ Encode(IK_B) ‖ appendix   as in X3DH
//! ```
//!
//! The initial message adds the KEM pre-key id and `CT` to the classical
//! one. The bundle's second signature, the *hybrid offer signature*,
//! covers the classical offer transcript and the KEM pre-key's type, id,
//! kind and encoding ([`hybrid_offer_transcript`]).
//!
//! ## Downgrades
//!
//! A relay that strips the KEM part from a bundle is refused by an
//! initiator that requires the hybrid ([`HybridError::HybridStripped`];
//! [`X3dhMlKem768::require_hybrid`], on by default, to be set from the
//! invitation). A classical initiator ignores the hybrid's fields, checks
//! the classical offer signature, and connects with classical X3DH if the
//! responder allows it ([`X3dhMlKem768::allow_classical`], off by
//! default; otherwise [`HybridError::ClassicalRefused`]). Such a classical
//! session is not post-quantum.
//!
//! ## Secrets
//!
//! KEM decapsulation keys are wiped on drop (`ml-kem`'s `zeroize`
//! feature), and shared secrets and seeds are held in
//! [`zeroize::Zeroizing`]. No `Debug` output contains secret bytes.
//!
//! [PQXDH specification]: https://signal.org/docs/specifications/pqxdh/

mod bundle;
mod error;
mod initial;
mod kem;
mod plugin;
mod responder;

pub use bundle::{
    HYBRID_OFFER_LABEL, HybridPreKeyBundle, MAX_HYBRID_BUNDLE_LEN, PublicKemPreKey,
    VerifiedHybridBundle, hybrid_offer_transcript,
};
pub use error::HybridError;
pub use initial::{HybridInitialMessage, KemEncapsulation};
pub use kem::{
    KEM_CIPHERTEXT_LEN, KEM_DECAPSULATION_KEY_LEN, KEM_PRE_KEY_STORAGE_LEN, KEM_PUBLIC_KEY_LEN,
    KEM_SEED_LEN, KEM_SHARED_SECRET_LEN, KEM_TYPE_ML_KEM_768, KemCiphertext, KemKeyPair, KemPreKey,
    KemPreKeyKind, KemPublicKey, KemSharedSecret,
};
pub use plugin::{DEFAULT_HYBRID_INFO, X3dhMlKem768};
pub use responder::HybridResponderKeys;
