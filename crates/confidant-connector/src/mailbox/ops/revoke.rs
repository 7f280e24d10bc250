//! A party revokes a connection: its waiting messages (both ways) are
//! deleted, and the other party gets a notice. Revoking twice is not an
//! error.

use super::{Redb, RedbResult, store_message, subtract_pending};
use crate::auth::PartyKey;
use crate::mailbox::codec::{
    CONNECTIONS, ConnectionRecord, Fatal, MESSAGES, decode_message, message_key,
};
use crate::mailbox::{Content, MailboxError};
use redb::ReadableTable as _;

/// Revokes `connection_id`; answers the other party.
pub(in crate::mailbox) fn redb(redb: &Redb<'_>, connection_id: &str) -> RedbResult<PartyKey> {
    let Some(mut record) = redb
        .txn
        .open_table(CONNECTIONS)?
        .get(connection_id.as_bytes())?
        .map(|value| ConnectionRecord::decode(value.value()))
        .transpose()
        .map_err(Fatal)?
    else {
        return Ok(Err(MailboxError::UnknownConnection));
    };
    let Some(other) = record.other(&redb.party) else {
        return Ok(Err(MailboxError::NotAParty));
    };
    if record.revoked {
        return Ok(Ok(other));
    }
    record.revoked = true;
    redb.txn
        .open_table(CONNECTIONS)?
        .insert(connection_id.as_bytes(), record.encode().as_slice())?;
    for recipient in record.parties {
        let mut messages = redb.txn.open_table(MESSAGES)?;
        let start = message_key(&recipient, 0);
        let end = message_key(&recipient, u64::MAX);
        let mut doomed = Vec::new();
        for entry in messages.range(start.as_slice()..=end.as_slice())? {
            let (key, value) = entry?;
            let stored = decode_message(0, value.value()).map_err(Fatal)?;
            if stored.connection_id == connection_id {
                doomed.push(key.value().to_vec());
            }
        }
        for key in &doomed {
            messages.remove(key.as_slice())?;
        }
        drop(messages);
        subtract_pending(redb.txn, &recipient, doomed.len() as u64)?;
    }
    Ok(store_message(
        redb,
        &other,
        connection_id,
        &Content::ConnectionRevoked,
        None,
    )?
    .map(|_| other))
}

/// The PostgreSQL call: `$5` the connection id; it answers the other party.
pub(in crate::mailbox) const POSTGRES: &str =
    "SELECT code, id, party FROM confidant_revoke($1, $2, $3, $4, $5)";
