//! The key schedule: from the agreed secret to per-direction, per-epoch keys.
//!
//! ```text
//! binding        = SHA-256("Confidant v1 binding" ‖ len32(connection_id) ‖ connection_id
//!                          ‖ len32(AD) ‖ AD)
//! PRK            = HKDF-Extract(salt = "Confidant v1 session", IKM = SK)
//! chain_0[d]     = HKDF-Expand(PRK, "Confidant v1 chain" ‖ suite ‖ d ‖ binding, 32)
//! key_e[d]       = HKDF-Expand(chain_e[d], "Confidant v1 key" ‖ suite ‖ d ‖ e, key_len)
//! iv_seed_e[d]   = HKDF-Expand(chain_e[d], "Confidant v1 iv seed" ‖ suite ‖ d ‖ e, seed_len)
//! chain_{e+1}[d] = HKDF-Expand(chain_e[d], "Confidant v1 next epoch" ‖ suite ‖ d ‖ e, 32)
//! ```
//! `suite` is the suite id as 4 big-endian bytes, `d` the direction byte
//! (1 = initiator to responder, 2 = responder to initiator), `e` the epoch as
//! 4 big-endian bytes. The two directions never share a key, and an epoch's
//! chain key is forgotten once the next epoch's has been derived.

use confidant_core::{Direction, SuiteId};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::SessionError;

/// Length of chain keys and of the binding digest.
pub(crate) const CHAIN_KEY_LEN: usize = 32;

/// The longest key or IV seed a suite may ask for.
pub(crate) const MAX_KEY_MATERIAL_LEN: usize = 64;

/// Digest of the connection id and the key agreement's associated data,
/// bound into every key and every message's associated data.
pub(crate) fn binding(connection_id: &[u8], associated_data: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"Confidant v1 binding");
    hash.update((connection_id.len() as u32).to_be_bytes());
    hash.update(connection_id);
    hash.update((associated_data.len() as u32).to_be_bytes());
    hash.update(associated_data);
    hash.finalize().into()
}

/// Secret key material of one direction at one epoch.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct EpochKeys {
    /// The AEAD key.
    pub(crate) key: Vec<u8>,
    /// The IV strategy's seed.
    pub(crate) iv_seed: Vec<u8>,
}

/// The chain key from which an epoch's keys and the next chain key come.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct ChainKey(pub(crate) [u8; CHAIN_KEY_LEN]);

fn label(name: &[u8], suite: SuiteId, direction: Direction, tail: &[u8]) -> Vec<u8> {
    let mut info = Vec::with_capacity(name.len() + 5 + tail.len());
    info.extend_from_slice(name);
    info.extend_from_slice(&suite.0.to_be_bytes());
    info.push(direction.to_byte());
    info.extend_from_slice(tail);
    info
}

fn expand(prk: &[u8], info: &[u8], out: &mut [u8]) -> Result<(), SessionError> {
    let hkdf = Hkdf::<Sha256>::from_prk(prk).map_err(|_| SessionError::KeyDerivation)?;
    hkdf.expand(info, out)
        .map_err(|_| SessionError::KeyDerivation)
}

/// The first chain key of `direction`.
pub(crate) fn initial_chain_key(
    shared_secret: &[u8; 32],
    suite: SuiteId,
    direction: Direction,
    binding: &[u8; 32],
) -> Result<ChainKey, SessionError> {
    let (prk, _) = Hkdf::<Sha256>::extract(Some(b"Confidant v1 session"), shared_secret);
    let mut chain = ChainKey([0; CHAIN_KEY_LEN]);
    let result = expand(
        &prk,
        &label(b"Confidant v1 chain", suite, direction, binding),
        &mut chain.0,
    );
    let mut prk: [u8; 32] = prk.into();
    prk.zeroize();
    result.map(|()| chain)
}

impl ChainKey {
    /// The keys of `epoch` and the chain key of `epoch + 1`.
    pub(crate) fn derive(
        &self,
        suite: SuiteId,
        direction: Direction,
        epoch: u32,
        key_len: usize,
        iv_seed_len: usize,
    ) -> Result<(EpochKeys, ChainKey), SessionError> {
        if key_len > MAX_KEY_MATERIAL_LEN || iv_seed_len > MAX_KEY_MATERIAL_LEN {
            return Err(SessionError::KeyDerivation);
        }
        let epoch_bytes = epoch.to_be_bytes();
        let mut keys = EpochKeys {
            key: vec![0; key_len],
            iv_seed: vec![0; iv_seed_len],
        };
        let mut next = ChainKey([0; CHAIN_KEY_LEN]);
        expand(
            &self.0,
            &label(b"Confidant v1 key", suite, direction, &epoch_bytes),
            &mut keys.key,
        )?;
        if iv_seed_len > 0 {
            expand(
                &self.0,
                &label(b"Confidant v1 iv seed", suite, direction, &epoch_bytes),
                &mut keys.iv_seed,
            )?;
        }
        expand(
            &self.0,
            &label(b"Confidant v1 next epoch", suite, direction, &epoch_bytes),
            &mut next.0,
        )?;
        Ok((keys, next))
    }
}
