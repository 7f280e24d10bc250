//! What a node does outside any one connection's state: storing an
//! invitation, the record of a join, what to send again at start, and the
//! resume points that carry sending counters across a clean restart.

use crate::binding::{invitation_binding, reset_binding, signed_reset_request, stored_bundle};
use crate::context::{Context, Handshaker, Random};
use crate::error::EngineError;
use crate::records::{self, ConnectionRecord, Phase, Side};
use confidant_core::ConnectionId;
use confidant_core::wire::{self, envelope::Body};
use confidant_store::{
    IdentityStore, InboxEntry, InboxStore, PreKeyStore, RawStore, SendResume, StoreError, Table,
    WriteBatch, WriteOp, decode_resume_point,
};
use confidant_x3dh::{IdentityKeyPair, ResponderKeys, SignedPreKey, X3dhError};

/// The changes that store a new invitation's token (used once, by the
/// first join).
pub fn invitation_created(token: &str) -> WriteBatch {
    let mut batch = WriteBatch::new();
    records::put_invitation(&mut batch, token);
    batch
}

/// Invitee: the record of a connection just joined with an invitation
/// (issued by `identity`, with `token`), waiting for the inviter's bundle;
/// `greeting` is sealed into the initial message. `hybrid`: the invitation
/// says the inviter has the post-quantum hybrid, so this connection's
/// bundles must carry it (see [`Handshaker::initiate`]). The batch *inserts* the
/// record: its commit fails with [`StoreError::AlreadyExists`] if the relay
/// answered with the id of a connection this node already has, which must
/// be refused.
pub fn joined(
    connection_id: &ConnectionId,
    identity: [u8; 32],
    token: &str,
    greeting: Vec<u8>,
    hybrid: bool,
) -> Result<WriteBatch, StoreError> {
    let record = ConnectionRecord {
        side: Side::Invitee,
        peer_identity: Some(identity),
        phase: Phase::AwaitingBundle { greeting },
        pending_initial: None,
        reset_requested: false,
        reset_one_time_pre_key: None,
        invitation_token: Some(token.to_owned()),
        reset_nonce: None,
        reset_bundle_key: None,
        hybrid_required: hybrid,
    };
    let mut batch = WriteBatch::new();
    record.insert(&mut batch, connection_id)?;
    Ok(batch)
}

/// What a node does when it starts.
#[derive(Debug, Default)]
pub struct Resumed {
    /// The handshake steps a crash may have kept from leaving, to send
    /// again (the other side refuses or ignores copies of what it has).
    pub again: Vec<(ConnectionId, Vec<u8>)>,
    /// The inbox entries the application has not acknowledged, to report
    /// again.
    pub inbox: Vec<InboxEntry>,
}

/// Reads what to do at start (see [`Resumed`]).
pub fn resume(context: &Context, store: &dyn RawStore) -> Result<Resumed, EngineError> {
    let mut resumed = Resumed::default();
    for (id, record) in ConnectionRecord::all(store)? {
        let mut envelopes = Vec::new();
        match (&record.phase, record.side) {
            // A reset asked for and not answered yet: the request again,
            // with the nonce the answer must be bound to.
            (Phase::Established, Side::Invitee)
                if record.reset_requested && record.reset_bundle_key.is_none() =>
            {
                if let Some(nonce) = record.reset_nonce.clone() {
                    let request = signed_reset_request(context, &id, Some(nonce))?;
                    envelopes.push(wire::encode_envelope(Body::Reset(request)));
                }
            }
            _ if record.pending_initial.is_some() => {
                envelopes.extend(record.pending_initial.clone());
            }
            (Phase::BundleSent { one_time_pre_key }, Side::Inviter) => {
                let binding = invitation_binding(&id, record.invitation_token.as_deref());
                if let Some(bundle) = stored_bundle(context, store, *one_time_pre_key, &binding)? {
                    envelopes.push(wire::encode_envelope(Body::Bundle(bundle)));
                }
            }
            _ => {}
        }
        if record.side == Side::Inviter
            && let (Some(key), Some(nonce)) =
                (record.reset_one_time_pre_key, record.reset_nonce.as_deref())
        {
            let binding = reset_binding(&id, nonce);
            if let Some(bundle) = stored_bundle(context, store, key, &binding)? {
                envelopes.push(wire::encode_envelope(Body::Bundle(bundle)));
            }
        }
        resumed
            .again
            .extend(envelopes.into_iter().map(|envelope| (id.clone(), envelope)));
    }
    resumed.inbox = store.inbox()?;
    Ok(resumed)
}

/// The changes a node commits as it shuts down cleanly: where each
/// connection's sending counter stands (`points`, from connections that
/// sealed nothing since), so that waking it after the restart needs no
/// reservation commit. Give only points of sessions that seal nothing more
/// in this process.
pub fn stopped_cleanly(points: &[(ConnectionId, SendResume)]) -> WriteBatch {
    let mut batch = WriteBatch::new();
    for (connection_id, point) in points {
        batch.put_resume_point(connection_id, *point);
    }
    batch
}

/// At start: the resume points the last clean shutdown stored, and the
/// batch that deletes them all. **Commit the batch before anything is
/// sealed**, and use the points only once it is durable: a point is true
/// only until its session seals again, so one left in the store would be
/// trusted again after a crash and counters would be reused. Points that
/// cannot be decoded are deleted and not given (their connections reserve
/// anew, as after a crash); a sealed point that fails to open (a damaged
/// encrypted file) fails the call, as any damaged record does.
pub fn stored_resume_points(
    store: &dyn RawStore,
) -> Result<(Vec<(ConnectionId, SendResume)>, WriteBatch), StoreError> {
    let mut points = Vec::new();
    let mut batch = WriteBatch::new();
    for (key, value) in store.entries(Table::ResumePoints)? {
        match decode_resume_point(&key, &value) {
            Ok(point) => points.push(point),
            Err(error) => {
                tracing::warn!(%error, "a stored resume point is unreadable; its connection reserves anew");
            }
        }
        batch.push(WriteOp::Delete {
            table: Table::ResumePoints,
            key,
        });
    }
    Ok((points, batch))
}

/// When signed pre-keys are replaced, and how long a replaced one is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A signed pre-key older than this many seconds is replaced by a new
    /// one (with the key agreement's extra beside it: the hybrid's
    /// last-resort KEM pre-key).
    pub every_seconds: u64,
    /// A replaced signed pre-key (and its extra) is deleted this many
    /// seconds after its successor was made: initial messages answering a
    /// bundle that offered it are taken until then.
    pub grace_seconds: u64,
}

impl Default for Rotation {
    /// Every 7 days, kept 30 days after.
    fn default() -> Self {
        Self {
            every_seconds: 7 * 24 * 3600,
            grace_seconds: 30 * 24 * 3600,
        }
    }
}

/// The node's identity and every stored signed pre-key (the one with the
/// highest id is the current one, advertised in bundles), without one-time
/// pre-keys (those are added per handshake). `None` before the first
/// [`rotate_signed_pre_keys`].
pub fn responder_keys(store: &dyn RawStore) -> Result<Option<ResponderKeys>, StoreError> {
    let Some(identity) = store.identity()? else {
        return Ok(None);
    };
    let mut ids = store.signed_pre_key_ids()?;
    ids.sort_unstable();
    let keys_error = |error: X3dhError| StoreError::Corrupt(format!("stored pre-key: {error}"));
    let mut keys: Option<ResponderKeys> = None;
    for id in ids {
        let key = store
            .signed_pre_key(id)?
            .ok_or(StoreError::Inconsistent("signed pre-key vanished"))?;
        match keys.as_mut() {
            None => keys = Some(ResponderKeys::new(identity.clone(), key).map_err(keys_error)?),
            Some(keys) => keys.add_signed_pre_key(key).map_err(keys_error)?,
        }
    }
    Ok(keys)
}

/// The changes that bring the node's signed pre-keys up to date at
/// `now_seconds` (Unix time, from the driver's clock), under `rotation`;
/// an empty batch when nothing is due. Commit it before building the
/// context from [`responder_keys`].
///
/// - A signed pre-key stored without the time it was made (every key of a
///   store written before rotation existed) is taken as made now.
/// - A signed pre-key without the extra `agreement` keeps beside it (the
///   hybrid's last-resort KEM pre-key) gets one: a node that turns the
///   hybrid on needs one for each key it still answers with.
/// - When the current signed pre-key (the highest id) was made
///   `every_seconds` ago or more, a new one with the next id, its extra and
///   its time are added. With no signed pre-key at all, the first (id 1).
/// - A signed pre-key whose successor was made `grace_seconds` ago or more
///   is deleted with its extra and time. The current one never is.
///
/// A clock set backwards delays rotation; it never deletes the current key.
pub fn rotate_signed_pre_keys(
    agreement: &dyn Handshaker,
    identity: &IdentityKeyPair,
    random: &dyn Random,
    store: &dyn RawStore,
    now_seconds: u64,
    rotation: Rotation,
) -> Result<WriteBatch, EngineError> {
    let mut batch = WriteBatch::new();
    let mut ids = store.signed_pre_key_ids()?;
    ids.sort_unstable();
    let stored = crate::extras::signed_records(store)?;
    let made: std::collections::BTreeMap<u32, u64> = stored.made.into_iter().collect();
    let with_extra: std::collections::BTreeSet<u32> =
        stored.extras.into_iter().map(|(id, _)| id).collect();
    let made_at = |id: u32, batch: &mut WriteBatch| match made.get(&id) {
        Some(&seconds) => seconds,
        None => {
            crate::extras::put_made_at(batch, id, now_seconds);
            now_seconds
        }
    };
    let mut times = Vec::with_capacity(ids.len());
    for &id in &ids {
        times.push((id, made_at(id, &mut batch)));
        if !with_extra.contains(&id)
            && let Some(extra) = agreement
                .new_signed_extra(identity, id, random)
                .map_err(EngineError::Handshake)?
        {
            crate::extras::put_signed(&mut batch, id, &extra);
        }
    }
    let due = match times.last() {
        None => Some(1),
        Some(&(id, made)) if now_seconds.saturating_sub(made) >= rotation.every_seconds => Some(
            id.checked_add(1)
                .ok_or(EngineError::Store(StoreError::Inconsistent(
                    "signed pre-key ids are exhausted",
                )))?,
        ),
        Some(_) => None,
    };
    if let Some(id) = due {
        let secret = {
            let mut secret = zeroize::Zeroizing::new([0u8; 32]);
            random.fill(secret.as_mut()).map_err(EngineError::Random)?;
            secret
        };
        let key = SignedPreKey::new(identity, id, *secret);
        batch.put_signed_pre_key(&key);
        crate::extras::put_made_at(&mut batch, id, now_seconds);
        if let Some(extra) = agreement
            .new_signed_extra(identity, id, random)
            .map_err(EngineError::Handshake)?
        {
            crate::extras::put_signed(&mut batch, id, &extra);
        }
        times.push((id, now_seconds));
    }
    // Each key but the newest is retired when its successor was made.
    for (&(old, _), &(_, successor_made)) in times.iter().zip(times.iter().skip(1)) {
        if now_seconds.saturating_sub(successor_made) >= rotation.grace_seconds {
            batch.delete_signed_pre_key(old);
            crate::extras::delete_signed(&mut batch, old);
        }
    }
    Ok(batch)
}

/// The changes a node makes to its keys when it starts at `now_seconds`:
/// a new identity key (from `random`) if the store has none, then
/// [`rotate_signed_pre_keys`]. An empty batch when nothing is due. Commit
/// it, then build the context over [`responder_keys`].
pub fn key_changes(
    agreement: &dyn Handshaker,
    random: &dyn Random,
    store: &dyn RawStore,
    now_seconds: u64,
    rotation: Rotation,
) -> Result<WriteBatch, EngineError> {
    let mut batch = WriteBatch::new();
    let identity = match store.identity()? {
        Some(identity) => identity,
        None => {
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            random.fill(seed.as_mut()).map_err(EngineError::Random)?;
            let identity = IdentityKeyPair::from_seed(*seed);
            batch.put_identity(&identity);
            identity
        }
    };
    batch.append(rotate_signed_pre_keys(
        agreement,
        &identity,
        random,
        store,
        now_seconds,
        rotation,
    )?);
    Ok(batch)
}
