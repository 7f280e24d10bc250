//! A request's nonce: accepted once, and only while its window lasts.
//!
//! A nonce that expired before the latest pruning time may have been
//! pruned, so its absence from the table proves nothing: it is refused as
//! expired. PostgreSQL holds the same rule in `confidant_take_nonce`
//! (a primary key on party and nonce; the pruning time read again after the
//! insert, so a pruning that commits meanwhile is seen).

use super::{Redb, RedbResult};
use crate::auth::Verified;
use crate::mailbox::MailboxError;
use crate::mailbox::codec::{NONCE_EXPIRY, NONCES, expiry_key, nonce_key};
use redb::ReadableTable as _;

/// Whether a nonce that expires at `expires_ms` is refused at `now_ms`
/// when nonces were pruned up to `pruned_before`.
pub(in crate::mailbox) fn expired(expires_ms: u64, now_ms: u64, pruned_before: u64) -> bool {
    expires_ms < now_ms.max(pruned_before)
}

/// Records `verified`'s nonce in the transaction, or refuses it.
pub(in crate::mailbox) fn redb(
    redb: &Redb<'_>,
    verified: &Verified,
    pruned_at: u64,
) -> RedbResult<()> {
    if expired(verified.expires_ms, redb.now_ms, pruned_at) {
        return Ok(Err(MailboxError::NonceExpired));
    }
    let key = nonce_key(&verified.party, &verified.nonce);
    let mut nonces = redb.txn.open_table(NONCES)?;
    if nonces.get(key.as_slice())?.is_some() {
        return Ok(Err(MailboxError::NonceReplayed));
    }
    nonces.insert(key.as_slice(), verified.expires_ms)?;
    redb.txn
        .open_table(NONCE_EXPIRY)?
        .insert(expiry_key(verified.expires_ms, &key).as_slice(), ())?;
    Ok(Ok(()))
}

/// The PostgreSQL call: the nonce alone.
pub(in crate::mailbox) const POSTGRES: &str =
    "SELECT code, id, party FROM confidant_use_nonce($1, $2, $3, $4)";
