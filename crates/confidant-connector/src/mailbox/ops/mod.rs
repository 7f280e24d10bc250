//! The mailbox's operations, one module each. Each holds what both
//! backends share (the checks that need no storage, the meaning of each
//! refusal) and its two storage forms: the steps in a redb write
//! transaction, and the call of its PostgreSQL function (the function
//! itself is in the migrations, `postgres/schema.rs`).
//!
//! Every write first records the request's nonce ([`nonce`]) in the same
//! transaction as its effect; a refusal after that keeps the nonce used.

pub(super) mod acknowledge;
pub(super) mod nonce;
pub(super) mod revoke;
pub(super) mod send;
pub(super) mod send_batch;
pub(super) mod tokens;

use super::codec::{Fatal, MESSAGES, META, NEXT_ID_KEY, PENDING, encode_message, message_key};
use super::{Content, Limits, MailboxError, storage};
use crate::auth::{PartyKey, Verified};
use redb::{ReadableTable as _, WriteTransaction};

/// One request's place in a redb write transaction.
pub(super) struct Redb<'a> {
    pub(super) txn: &'a WriteTransaction,
    pub(super) limits: Limits,
    pub(super) party: PartyKey,
    pub(super) now_ms: u64,
}

/// `Err`: the transaction is aborted (every request of the group is
/// refused); `Ok(Err)`: this request is refused, the transaction goes on
/// (what the request wrote before its refusal was only its nonce).
pub(super) type RedbResult<T> = Result<Result<T, MailboxError>, Fatal>;

fn next_id(txn: &WriteTransaction) -> Result<u64, Fatal> {
    let mut meta = txn.open_table(META)?;
    let current = meta
        .get(NEXT_ID_KEY)?
        .and_then(|value| <[u8; 8]>::try_from(value.value()).ok())
        .map_or(1, u64::from_be_bytes);
    meta.insert(
        NEXT_ID_KEY,
        current.saturating_add(1).to_be_bytes().as_slice(),
    )?;
    Ok(current)
}

/// Stores a message for `recipient` (refused when `limit` messages wait
/// already) and returns its id.
fn store_message(
    redb: &Redb<'_>,
    recipient: &PartyKey,
    connection_id: &str,
    content: &Content,
    limit: Option<u64>,
) -> RedbResult<u64> {
    let mut pending = redb.txn.open_table(PENDING)?;
    let count = pending
        .get(recipient.as_slice())?
        .map_or(0, |count| count.value());
    if let Some(limit) = limit
        && count >= limit
    {
        return Ok(Err(MailboxError::MailboxFull { limit }));
    }
    pending.insert(recipient.as_slice(), count + 1)?;
    let id = next_id(redb.txn)?;
    redb.txn.open_table(MESSAGES)?.insert(
        message_key(recipient, id).as_slice(),
        encode_message(connection_id, redb.now_ms, content).as_slice(),
    )?;
    Ok(Ok(id))
}

/// Lowers `recipient`'s count of waiting messages by `deleted`.
fn subtract_pending(
    txn: &WriteTransaction,
    recipient: &PartyKey,
    deleted: u64,
) -> Result<(), Fatal> {
    if deleted == 0 {
        return Ok(());
    }
    let mut pending = txn.open_table(PENDING)?;
    let count = pending
        .get(recipient.as_slice())?
        .map_or(0, |count| count.value());
    pending.insert(recipient.as_slice(), count.saturating_sub(deleted))?;
    Ok(())
}

/// What a PostgreSQL operation function answers: `ok` or the name of a
/// refusal, and the operation's id and party where it has them.
pub(super) struct PgAnswer {
    /// The code was `duplicate` (a send whose client id stored it before).
    pub(super) duplicate: bool,
    pub(super) id: Option<i64>,
    pub(super) party: Option<Vec<u8>>,
}

/// A millisecond time or id as PostgreSQL's `bigint`.
pub(super) fn pg_int(value: u64) -> Result<i64, MailboxError> {
    i64::try_from(value).map_err(|_| MailboxError::Invalid("a time or id beyond 2^63"))
}

/// A `bigint` read back as an id.
pub(super) fn pg_id(value: Option<i64>) -> Result<u64, MailboxError> {
    value
        .and_then(|value| u64::try_from(value).ok())
        .ok_or_else(|| MailboxError::Storage("the database answered without an id".into()))
}

/// A `bytea` read back as a party key.
pub(super) fn pg_party(value: Option<Vec<u8>>) -> Result<PartyKey, MailboxError> {
    value
        .and_then(|value| PartyKey::try_from(value.as_slice()).ok())
        .ok_or_else(|| MailboxError::Storage("the database answered without a party".into()))
}

/// Calls an operation function whose first four arguments are the
/// request's party, nonce, nonce expiry and clock, then `rest`; its row.
pub(super) async fn pg_row(
    client: &deadpool_postgres::Client,
    sql: &str,
    verified: &Verified,
    now_ms: u64,
    rest: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row, MailboxError> {
    let statement = client.prepare_cached(sql).await.map_err(storage)?;
    let party = verified.party.as_slice();
    let nonce = verified.nonce.as_slice();
    let expires = pg_int(verified.expires_ms)?;
    let now = pg_int(now_ms)?;
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&party, &nonce, &expires, &now];
    params.extend_from_slice(rest);
    client.query_one(&statement, &params).await.map_err(storage)
}

/// The answer of an operation function (`SELECT code, id, party FROM
/// f(…)`), a refusal turned into its error.
pub(super) fn pg_answer(
    row: &tokio_postgres::Row,
    limits: Limits,
) -> Result<PgAnswer, MailboxError> {
    let code: String = row.try_get(0).map_err(storage)?;
    if code != "ok" && code != "duplicate" {
        return Err(refusal(&code, limits));
    }
    Ok(PgAnswer {
        duplicate: code == "duplicate",
        id: row.try_get(1).map_err(storage)?,
        party: row.try_get(2).map_err(storage)?,
    })
}

/// The error a PostgreSQL function's refusal code stands for.
pub(super) fn refusal(code: &str, limits: Limits) -> MailboxError {
    match code {
        "nonce_replayed" => MailboxError::NonceReplayed,
        "nonce_expired" => MailboxError::NonceExpired,
        "unknown_token" => MailboxError::UnknownToken,
        "token_used" => MailboxError::TokenUsed,
        "own_token" => tokens::OWN_TOKEN,
        "unknown_connection" => MailboxError::UnknownConnection,
        "not_a_party" => MailboxError::NotAParty,
        "revoked" => MailboxError::Revoked,
        "mailbox_full" => MailboxError::MailboxFull {
            limit: limits.max_pending_per_recipient,
        },
        "client_id_reused" => MailboxError::ClientIdReused,
        other => MailboxError::Storage(format!("the database answered {other:?}")),
    }
}
