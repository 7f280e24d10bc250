//! What a node does outside any one connection's state: storing an
//! invitation, the record of a join, what to send again at start, and the
//! resume points that carry sending counters across a clean restart.

use crate::binding::{invitation_binding, reset_binding, signed_reset_request, stored_bundle};
use crate::context::Context;
use crate::error::EngineError;
use crate::records::{self, ConnectionRecord, Phase, Side};
use confidant_core::ConnectionId;
use confidant_core::wire::{self, envelope::Body};
use confidant_store::{
    InboxEntry, InboxStore, RawStore, SendResume, StoreError, Table, WriteBatch, WriteOp,
    decode_resume_point,
};

/// The changes that store a new invitation's token (used once, by the
/// first join).
pub fn invitation_created(token: &str) -> WriteBatch {
    let mut batch = WriteBatch::new();
    records::put_invitation(&mut batch, token);
    batch
}

/// Invitee: the record of a connection just joined with an invitation
/// (issued by `identity`, with `token`), waiting for the inviter's bundle;
/// `greeting` is sealed into the initial message. The batch *inserts* the
/// record: its commit fails with [`StoreError::AlreadyExists`] if the relay
/// answered with the id of a connection this node already has, which must
/// be refused.
pub fn joined(
    connection_id: &ConnectionId,
    identity: [u8; 32],
    token: &str,
    greeting: Vec<u8>,
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
