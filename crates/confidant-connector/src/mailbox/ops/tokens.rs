//! Tokens: created by a party, used once by another (a conditional update
//! in PostgreSQL: `UPDATE … WHERE NOT used`), which creates the connection
//! and leaves the creator a notice. A notice is never refused for a full
//! mailbox: the connection exists either way.
//!
//! The token keeps who used it and the connection that made, so a join
//! repeated by the same joiner (its answer was lost, and it asks again,
//! perhaps on another instance) answers that connection and changes
//! nothing; anyone else is refused as before.

use super::{Redb, RedbResult, pg_party, refusal, store_message};
use crate::mailbox::codec::{CONNECTIONS, ConnectionRecord, Fatal, TOKENS, TokenRecord};
use crate::mailbox::{Content, Joined, Limits, MailboxError, storage};
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
        joined: None,
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
        return Ok(match record.joined {
            Some((joiner, connection_id)) if joiner == redb.party => Ok(Joined {
                connection_id,
                creator: record.creator,
                repeated: true,
            }),
            _ => Err(MailboxError::TokenUsed),
        });
    }
    if record.creator == redb.party {
        return Ok(Err(OWN_TOKEN));
    }
    record.used = true;
    record.joined = Some((redb.party, connection_id.to_owned()));
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
            repeated: false,
        }),
    )
}

/// The PostgreSQL call (schema version 3): `$5` the token, `$6` the new
/// connection's id; it answers `ok` (or `repeated` for a join repeated by
/// its joiner), the connection and the creator.
pub(in crate::mailbox) const USE_POSTGRES: &str =
    "SELECT code, connection, party FROM confidant_join($1, $2, $3, $4, $5, $6)";

/// The answer of [`USE_POSTGRES`], a refusal turned into its error.
pub(in crate::mailbox) fn pg_joined(
    row: &tokio_postgres::Row,
    limits: Limits,
) -> Result<Joined, MailboxError> {
    let code: String = row.try_get(0).map_err(storage)?;
    let repeated = match code.as_str() {
        "ok" => false,
        "repeated" => true,
        refused => return Err(refusal(refused, limits)),
    };
    let connection_id: Option<String> = row.try_get(1).map_err(storage)?;
    Ok(Joined {
        connection_id: connection_id.ok_or_else(|| {
            MailboxError::Storage("the database answered without a connection".into())
        })?,
        creator: pg_party(row.try_get(2).map_err(storage)?)?,
        repeated,
    })
}
