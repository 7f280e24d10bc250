//! What the handshake's signatures cover: the bindings of bundles to their
//! handshake, and signed reset requests (see `docs/protocol.md`).

use crate::context::Context;
use crate::error::EngineError;
use crate::extras;
use crate::failure::HandshakeFailure;
use confidant_core::ConnectionId;
use confidant_core::wire::{PreKeyBundle, SessionReset};
use confidant_store::{PreKeyStore, RawStore, WriteBatch};
use confidant_x3dh::{IdentityPublicKey, OneTimePreKey};
use zeroize::Zeroizing;

/// Label of a session reset request's signature.
const RESET_LABEL: &[u8] = b"confidant-v1-session-reset";
/// Label of a first-contact bundle's binding.
const INVITATION_BINDING: &[u8] = b"confidant-v1-bind-invitation";
/// Label of a reset bundle's binding.
const RESET_BINDING: &[u8] = b"confidant-v1-bind-reset";
/// Length of a reset request's nonce.
pub const RESET_NONCE_LEN: usize = 16;

/// `label ‖ len(connection id) as u8 ‖ connection id ‖ nonce`: what a reset
/// request is signed over.
fn reset_message(connection_id: &ConnectionId, nonce: &[u8]) -> Vec<u8> {
    let id = connection_id.as_bytes();
    let mut message = Vec::with_capacity(RESET_LABEL.len() + 1 + id.len() + nonce.len());
    message.extend_from_slice(RESET_LABEL);
    message.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    message.extend_from_slice(id);
    message.extend_from_slice(nonce);
    message
}

/// `label ‖ len(connection id) as u32 BE ‖ connection id ‖ len(value) as
/// u32 BE ‖ value`: what a bundle's offer is signed over.
fn binding(label: &[u8], connection_id: &ConnectionId, value: &[u8]) -> Vec<u8> {
    let id = connection_id.as_bytes();
    let mut binding = Vec::with_capacity(label.len() + 8 + id.len() + value.len());
    binding.extend_from_slice(label);
    binding.extend_from_slice(&u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes());
    binding.extend_from_slice(id);
    binding.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
    binding.extend_from_slice(value);
    binding
}

/// The binding of a first-contact bundle: the connection and the
/// invitation's token.
pub fn invitation_binding(connection_id: &ConnectionId, token: Option<&str>) -> Vec<u8> {
    binding(
        INVITATION_BINDING,
        connection_id,
        token.unwrap_or_default().as_bytes(),
    )
}

/// The binding of a reset bundle: the connection and the nonce of the reset
/// request it answers.
pub fn reset_binding(connection_id: &ConnectionId, nonce: &[u8]) -> Vec<u8> {
    binding(RESET_BINDING, connection_id, nonce)
}

/// A fresh reset nonce.
pub(crate) fn fresh_nonce(context: &Context) -> Result<Vec<u8>, EngineError> {
    let mut nonce = vec![0u8; RESET_NONCE_LEN];
    context
        .random
        .fill(&mut nonce)
        .map_err(EngineError::Random)?;
    Ok(nonce)
}

/// A reset request for `connection_id` with `nonce` (a fresh one if
/// `None`), signed with the node's identity key.
pub fn signed_reset_request(
    context: &Context,
    connection_id: &ConnectionId,
    nonce: Option<Vec<u8>>,
) -> Result<SessionReset, EngineError> {
    let nonce = match nonce {
        Some(nonce) => nonce,
        None => fresh_nonce(context)?,
    };
    let signature = context
        .identity()
        .sign(&reset_message(connection_id, &nonce));
    Ok(SessionReset {
        connection_id: connection_id.as_str().to_owned(),
        identity_key: context.identity().public_key().to_bytes().to_vec(),
        nonce,
        signature: signature.to_vec(),
    })
}

/// Whether `reset` is a valid request for `connection_id` signed by
/// `signer`.
pub(crate) fn reset_request_is_valid(
    reset: &SessionReset,
    connection_id: &ConnectionId,
    signer: &[u8; 32],
) -> bool {
    reset.connection_id == connection_id.as_str()
        && reset.identity_key.as_slice() == signer.as_slice()
        && reset.nonce.len() == RESET_NONCE_LEN
        && <[u8; 64]>::try_from(reset.signature.as_slice())
            .ok()
            .zip(IdentityPublicKey::from_bytes(signer).ok())
            .is_some_and(|(signature, key)| {
                key.verify_strict(&reset_message(connection_id, &reset.nonce), &signature)
                    .is_ok()
            })
}

/// A one-time pre-key with the key agreement's extra for it (the hybrid's
/// one-time KEM pre-key), as stored and offered together.
pub struct OneTimeKeys {
    /// The X25519 one-time pre-key.
    pub key: OneTimePreKey,
    /// What the key agreement keeps beside it, if anything.
    pub extra: Option<Zeroizing<Vec<u8>>>,
}

impl OneTimeKeys {
    /// Adds both to `batch`.
    pub(crate) fn put(&self, batch: &mut WriteBatch) {
        batch.put_one_time_pre_key(&self.key);
        if let Some(extra) = &self.extra {
            extras::put_one_time(batch, self.key.id(), extra);
        }
    }
}

/// Adds the deletion of one-time pre-key `id` and of its extra to `batch`.
pub(crate) fn delete_one_time(batch: &mut WriteBatch, id: u32) {
    batch.delete_one_time_pre_key(id);
    extras::delete_one_time(batch, id);
}

/// The node's bundle with one one-time pre-key (and its extra), its offer
/// signed over `binding`.
pub fn bundle_with(
    context: &Context,
    one_time: OneTimeKeys,
    binding: &[u8],
) -> Result<PreKeyBundle, EngineError> {
    let mut keys = context.keys.clone();
    keys.add_one_time_pre_key(one_time.key)
        .map_err(|error| HandshakeFailure::from_key_agreement(&error))?;
    context
        .agreement
        .bundle(
            &keys,
            one_time.extra.as_deref().map(Vec::as_slice),
            &context.config.offered_suites,
            binding,
        )
        .map_err(EngineError::Handshake)
}

/// The stored one-time pre-key `key_id` with its extra; `None` if that key
/// is gone (its handshake finished).
pub fn stored_one_time(
    store: &dyn RawStore,
    key_id: u32,
) -> Result<Option<OneTimeKeys>, EngineError> {
    let Some(key) = store.one_time_pre_key(key_id)? else {
        return Ok(None);
    };
    let extra = extras::one_time(store, key_id)?;
    Ok(Some(OneTimeKeys { key, extra }))
}

/// The node's bundle with the stored one-time pre-key `key_id`; `None` if
/// that key is gone (its handshake finished). Reads the store.
pub fn stored_bundle(
    context: &Context,
    store: &dyn RawStore,
    key_id: u32,
    binding: &[u8],
) -> Result<Option<PreKeyBundle>, EngineError> {
    stored_one_time(store, key_id)?
        .map(|one_time| bundle_with(context, one_time, binding))
        .transpose()
}

/// One-time pre-key ids stay below 2³¹: the hybrid numbers its
/// last-resort KEM pre-keys from 2³¹ up, and KEM pre-key ids must not
/// collide.
pub const ONE_TIME_ID_LIMIT: u32 = 1 << 31;

/// A fresh one-time pre-key whose id is not in the store (below
/// [`ONE_TIME_ID_LIMIT`]), with the key agreement's extra for it.
pub(crate) fn new_one_time_pre_key(
    context: &Context,
    store: &dyn RawStore,
) -> Result<OneTimeKeys, EngineError> {
    for _ in 0..16 {
        let mut id = [0u8; 4];
        context.random.fill(&mut id).map_err(EngineError::Random)?;
        let id = u32::from_be_bytes(id) % ONE_TIME_ID_LIMIT;
        if store.one_time_pre_key(id)?.is_none() {
            let mut secret = zeroize::Zeroizing::new([0u8; 32]);
            context
                .random
                .fill(secret.as_mut())
                .map_err(EngineError::Random)?;
            let extra = context
                .agreement
                .new_one_time_extra(context.identity(), id, &*context.random)
                .map_err(EngineError::Handshake)?;
            return Ok(OneTimeKeys {
                key: OneTimePreKey::new(id, *secret),
                extra,
            });
        }
    }
    Err(EngineError::Store(
        confidant_store::StoreError::Inconsistent("no free one-time pre-key id found"),
    ))
}
