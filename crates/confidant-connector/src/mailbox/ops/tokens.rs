//! Tokens: created by a party, used once by another (a conditional update
//! in PostgreSQL: `UPDATE … WHERE NOT used`), which creates the connection
//! and leaves the creator a notice. A notice is never refused for a full
//! mailbox: the connection exists either way.

use super::{Redb, RedbResult, store_message};
use crate::mailbox::codec::{CONNECTIONS, ConnectionRecord, Fatal, TOKENS, TokenRecord};
use crate::mailbox::{Content, Joined, MailboxError};
use redb::ReadableTable as _;

/// The refusal of a token used by its own creator.
pub(in crate::mailbox) const OWN_TOKEN: MailboxError =
    MailboxError::Invalid("a token cannot be used by its creator");

/// Stores new tokens of the request's party.
pub(in crate::mailbox) fn create_redb(redb: &Redb<'_>, tokens: &[String]) -> RedbResult<()> {
    let mut table = redb.txn.open_table(TOKENS)?;
    let record = TokenRecord {
        creator: redb.party,
        used: false,
        created_ms: redb.now_ms,
    };
    for token in tokens {
        table.insert(token.as_bytes(), record.encode().as_slice())?;
    }
    Ok(Ok(()))
}

/// The PostgreSQL call: `$5` the tokens (`text[]`).
pub(in crate::mailbox) const CREATE_POSTGRES: &str =
    "SELECT code, id, party FROM confidant_create_tokens($1, $2, $3, $4, $5)";

/// Uses `token`: the connection `connection_id` between its creator and the
/// request's party.
pub(in crate::mailbox) fn use_redb(
    redb: &Redb<'_>,
    token: &str,
    connection_id: &str,
) -> RedbResult<Joined> {
    let mut tokens = redb.txn.open_table(TOKENS)?;
    let Some(value) = tokens
        .get(token.as_bytes())?
        .map(|value| value.value().to_vec())
    else {
        return Ok(Err(MailboxError::UnknownToken));
    };
    let mut record = TokenRecord::decode(&value).map_err(Fatal)?;
    if record.used {
        return Ok(Err(MailboxError::TokenUsed));
    }
    if record.creator == redb.party {
        return Ok(Err(OWN_TOKEN));
    }
    record.used = true;
    tokens.insert(token.as_bytes(), record.encode().as_slice())?;
    drop(tokens);
    let connection = ConnectionRecord {
        parties: [record.creator, redb.party],
        revoked: false,
    };
    redb.txn
        .open_table(CONNECTIONS)?
        .insert(connection_id.as_bytes(), connection.encode().as_slice())?;
    let notice = Content::ConnectionAdded {
        token: token.to_owned(),
        peer: redb.party,
    };
    Ok(
        store_message(redb, &record.creator, connection_id, &notice, None)?.map(|_| Joined {
            connection_id: connection_id.to_owned(),
            creator: record.creator,
        }),
    )
}

/// The PostgreSQL call: `$5` the token, `$6` the new connection's id; it
/// answers the creator.
pub(in crate::mailbox) const USE_POSTGRES: &str =
    "SELECT code, id, party FROM confidant_use_token($1, $2, $3, $4, $5, $6)";
