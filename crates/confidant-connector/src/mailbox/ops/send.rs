//! A party's envelope for the other party of a connection. A client
//! message id makes a retried send stored once (a unique key on
//! connection, sender and client id in PostgreSQL); the same id with
//! another body is refused.

use super::{Redb, RedbResult, store_message};
use crate::auth::PartyKey;
use crate::mailbox::codec::{
    CLIENT_EXPIRY, CLIENT_IDS, CONNECTIONS, ConnectionRecord, Fatal, client_key,
    decode_client_record, encode_client_record, expiry_key,
};
use crate::mailbox::{Content, Limits, MailboxError, Sent, client_id_retention_ms};
use redb::ReadableTable as _;
use sha2::{Digest as _, Sha256};

/// The checks that need no storage.
pub(in crate::mailbox) fn check(envelope: &[u8], limits: Limits) -> Result<(), MailboxError> {
    if envelope.is_empty() {
        return Err(MailboxError::Invalid("the message is empty"));
    }
    if envelope.len() > limits.max_message_len {
        return Err(MailboxError::TooLarge {
            len: envelope.len(),
            limit: limits.max_message_len,
        });
    }
    Ok(())
}

/// The SHA-256 of an envelope, kept with its client id.
pub(in crate::mailbox) fn digest(envelope: &[u8]) -> [u8; 32] {
    Sha256::digest(envelope).into()
}

/// When a client id stored at `now_ms` is forgotten.
pub(in crate::mailbox) fn client_id_expiry(now_ms: u64) -> u64 {
    now_ms.saturating_add(client_id_retention_ms())
}

/// The redb steps (after [`check`]).
pub(in crate::mailbox) fn redb(
    redb: &Redb<'_>,
    connection_id: &str,
    envelope: &[u8],
    client_id: Option<&[u8]>,
) -> RedbResult<Sent> {
    let party: PartyKey = redb.party;
    let Some(record) = redb
        .txn
        .open_table(CONNECTIONS)?
        .get(connection_id.as_bytes())?
        .map(|value| ConnectionRecord::decode(value.value()))
        .transpose()
        .map_err(Fatal)?
    else {
        return Ok(Err(MailboxError::UnknownConnection));
    };
    let Some(recipient) = record.other(&party) else {
        return Ok(Err(MailboxError::NotAParty));
    };
    if record.revoked {
        return Ok(Err(MailboxError::Revoked));
    }
    let client = client_id.map(|client_id| client_key(connection_id, &party, client_id));
    let digest = digest(envelope);
    if let Some(client) = &client
        && let Some(existing) = redb
            .txn
            .open_table(CLIENT_IDS)?
            .get(client.as_slice())?
            .map(|value| value.value().to_vec())
    {
        let (id, stored_digest) = decode_client_record(&existing).map_err(Fatal)?;
        if stored_digest.is_some_and(|stored| stored != digest) {
            return Ok(Err(MailboxError::ClientIdReused));
        }
        return Ok(Ok(Sent {
            id,
            recipient,
            duplicate: true,
        }));
    }
    let id = match store_message(
        redb,
        &recipient,
        connection_id,
        &Content::Envelope(envelope.to_vec()),
        Some(redb.limits.max_pending_per_recipient),
    )? {
        Ok(id) => id,
        Err(error) => return Ok(Err(error)),
    };
    if let Some(client) = client {
        let expires = client_id_expiry(redb.now_ms);
        redb.txn.open_table(CLIENT_IDS)?.insert(
            client.as_slice(),
            encode_client_record(id, &digest).as_slice(),
        )?;
        redb.txn
            .open_table(CLIENT_EXPIRY)?
            .insert(expiry_key(expires, &client).as_slice(), ())?;
    }
    Ok(Ok(Sent {
        id,
        recipient,
        duplicate: false,
    }))
}

/// The PostgreSQL call: `$5` connection id, `$6` envelope, `$7` client id
/// (or NULL), `$8` the envelope's digest, `$9` the client id's expiry, `$10`
/// the most messages waiting per recipient. It answers the message id, the
/// recipient, and `duplicate` as its code's variant `ok` / `duplicate`.
pub(in crate::mailbox) const POSTGRES: &str =
    "SELECT code, id, party FROM confidant_send($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
