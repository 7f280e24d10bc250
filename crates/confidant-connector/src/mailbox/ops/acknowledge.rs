//! The recipient's acknowledgement: the only way a message is deleted
//! (besides the revocation of its connection).

use super::{Redb, RedbResult, subtract_pending};
use crate::mailbox::codec::{MESSAGES, message_key};

/// Deletes the request's party's messages `ids`; returns how many were.
pub(in crate::mailbox) fn redb(redb: &Redb<'_>, ids: &[u64]) -> RedbResult<u32> {
    let mut messages = redb.txn.open_table(MESSAGES)?;
    let mut deleted = 0u32;
    for id in ids {
        if messages
            .remove(message_key(&redb.party, *id).as_slice())?
            .is_some()
        {
            deleted += 1;
        }
    }
    drop(messages);
    subtract_pending(redb.txn, &redb.party, u64::from(deleted))?;
    Ok(Ok(deleted))
}

/// The PostgreSQL call: `$5` the ids (`bigint[]`); it answers the count.
pub(in crate::mailbox) const POSTGRES: &str =
    "SELECT code, id, party FROM confidant_acknowledge($1, $2, $3, $4, $5)";
