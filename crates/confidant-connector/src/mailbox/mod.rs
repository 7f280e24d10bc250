//! The connector's storage: tokens, connections, mailboxes, used nonces and
//! client message ids, behind [`MailboxStore`].
//!
//! Two backends implement it:
//! - [`RedbMailbox`] (module `redb`), the embedded default: one file, one
//!   writer thread that applies whatever requests wait in **one durable
//!   transaction** (group commit).
//! - [`PostgresMailbox`] (module `postgres`): tables in PostgreSQL whose
//!   constraints carry the guarantees, so that several stateless connector
//!   instances can share one database.
//!
//! What is not storage is shared: the types of this module, the checks of
//! each operation (module `ops`, one small module per operation) and the
//! error mapping. A request is answered only once its change is durable.

use crate::auth::{PartyKey, Verified};
use std::time::Duration;

mod codec;
mod ops;
pub mod postgres;
pub mod redb_store;

pub use postgres::PostgresMailbox;
pub use redb_store::RedbMailbox;

pub(crate) use codec::fuzz_round_trip;

/// The schema version this build reads and writes (redb file).
pub const SCHEMA_VERSION: u32 = 1;
/// How long a client message id is remembered.
pub const CLIENT_ID_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// [`CLIENT_ID_RETENTION`] in milliseconds.
pub(crate) fn client_id_retention_ms() -> u64 {
    u64::try_from(CLIENT_ID_RETENTION.as_millis()).unwrap_or(u64::MAX)
}

/// Limits on what a party may store and read at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest envelope accepted, in bytes.
    pub max_message_len: usize,
    /// Most messages stored for one recipient at a time.
    pub max_pending_per_recipient: u64,
    /// Most bytes of messages in one page (`GetMessagesPaginated`, or one
    /// batch of a stream), counted as [`StoredMessage::wire_len`]; a page
    /// always holds at least one message, however large.
    pub max_page_bytes: usize,
}

/// 4 MiB: what a gRPC client accepts by default.
pub const DEFAULT_MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_len: 1024 * 1024,
            max_pending_per_recipient: 10_000,
            max_page_bytes: DEFAULT_MAX_PAGE_BYTES,
        }
    }
}

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MailboxError {
    /// The token is unknown.
    #[error("unknown token")]
    UnknownToken,
    /// The token was already used.
    #[error("the token was already used")]
    TokenUsed,
    /// The connection is unknown.
    #[error("unknown connection")]
    UnknownConnection,
    /// The caller is not a party of the connection.
    #[error("the caller is not a party of this connection")]
    NotAParty,
    /// The connection was revoked.
    #[error("the connection was revoked")]
    Revoked,
    /// The envelope is larger than the limit.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The recipient already has the most messages it may have waiting.
    #[error("the recipient's mailbox is full ({limit} messages waiting)")]
    MailboxFull {
        /// The limit.
        limit: u64,
    },
    /// The nonce was already used.
    #[error("the nonce was already used")]
    NonceReplayed,
    /// The nonce's window had passed when the store came to record it.
    #[error("the nonce's five-minute window has passed")]
    NonceExpired,
    /// The client message id is already stored on this connection for
    /// another envelope.
    #[error("the client message id was already used for another message on this connection")]
    ClientIdReused,
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The storage's schema cannot be used by this build (a database or
    /// file from a newer build, a failed migration, an unusable URL).
    #[error("incompatible storage: {0}")]
    Schema(String),
    /// The storage failed (or cannot be reached): nothing of the request
    /// is known to be stored; the caller may retry.
    #[error("storage failed: {0}")]
    Storage(String),
}

/// The metadata key of a refused request's machine-readable reason (one
/// of [`MailboxError::reason`]'s words, such as `mailbox_full`). A batch
/// entry's refusal carries the same word in its `reason` field.
pub const REASON_HEADER: &str = "confidant-reason";

impl MailboxError {
    /// The refusal's reason as one lower-case word, the same in the
    /// [`REASON_HEADER`] metadata, a batch entry's `Refusal.reason` and the
    /// refusal metrics' `reason` label.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownToken => "unknown_token",
            Self::TokenUsed => "token_used",
            Self::UnknownConnection => "unknown_connection",
            Self::NotAParty => "not_a_party",
            Self::Revoked => "revoked",
            Self::TooLarge { .. } => "too_large",
            Self::MailboxFull { .. } => "mailbox_full",
            Self::NonceReplayed => "nonce_replayed",
            Self::NonceExpired => "nonce_expired",
            Self::ClientIdReused => "client_id_reused",
            Self::Invalid(_) => "invalid",
            Self::Schema(_) | Self::Storage(_) => "storage",
        }
    }
}

pub(crate) fn storage(error: impl std::fmt::Display) -> MailboxError {
    MailboxError::Storage(error.to_string())
}

/// What a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its creator.
    pub creator: PartyKey,
    /// Whether it was used.
    pub used: bool,
}

/// What a stored message holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// An envelope from the other party.
    Envelope(Vec<u8>),
    /// Someone joined with the recipient's token.
    ConnectionAdded {
        /// The token.
        token: String,
        /// Who joined.
        peer: PartyKey,
    },
    /// The other party revoked the connection.
    ConnectionRevoked,
}

/// How full the mailboxes are, for the metrics: two numbers whatever the
/// number of recipients, so the metrics' cardinality stays bounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxDepth {
    /// Messages waiting in all mailboxes.
    pub waiting: u64,
    /// Messages waiting in the deepest single mailbox (the most any one
    /// recipient has waiting; 0 when every mailbox is empty).
    pub deepest: u64,
}

/// A message waiting for its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id (the cursor).
    pub id: u64,
    /// Its connection.
    pub connection_id: String,
    /// When it was stored (milliseconds since the Unix epoch).
    pub received_at_ms: u64,
    /// What it holds.
    pub content: Content,
}

impl StoredMessage {
    /// An upper bound of its size as a `ReceivedMessage` in a page (its
    /// variable fields, plus 64 bytes for the fixed ones, tags and
    /// lengths).
    pub fn wire_len(&self) -> usize {
        let content = match &self.content {
            Content::Envelope(envelope) => envelope.len(),
            Content::ConnectionAdded { token, .. } => token.len() + 32,
            Content::ConnectionRevoked => 0,
        };
        content
            .saturating_add(self.connection_id.len())
            .saturating_add(64)
    }
}

/// Keeps messages, oldest first, while they fit in `max_bytes` of
/// [`StoredMessage::wire_len`] (the first is kept whatever its size).
pub(crate) fn cap_page(
    messages: impl IntoIterator<Item = StoredMessage>,
    max_bytes: usize,
) -> Vec<StoredMessage> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for message in messages {
        bytes = bytes.saturating_add(message.wire_len());
        if bytes > max_bytes && !out.is_empty() {
            break;
        }
        out.push(message);
    }
    out
}

/// A stored message's id and who should be told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The message's id.
    pub id: u64,
    /// Its recipient.
    pub recipient: PartyKey,
    /// Whether an earlier request with the same client id stored it.
    pub duplicate: bool,
}

/// One envelope of a batch send ([`MailboxStore::send_batch`]): what one
/// [`MailboxStore::send`] would take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    /// Its connection.
    pub connection_id: String,
    /// The envelope.
    pub envelope: Vec<u8>,
    /// Its client message id, if any.
    pub client_id: Option<Vec<u8>>,
}

/// What became of each entry of a batch, in the batch's order.
pub type BatchOutcome = Vec<Result<Sent, MailboxError>>;

/// A new connection, or the one a repeated join made the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Its id.
    pub connection_id: String,
    /// The token's creator, who gets the notice.
    pub creator: PartyKey,
    /// Whether the same joiner used the token before and this is the
    /// connection it made then (nothing was stored now, no notice left).
    pub repeated: bool,
}

/// What a store tells the service about changes it did not make itself
/// (another connector instance on the same database).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// New messages wait for this recipient.
    Mailbox(PartyKey),
    /// Changes may have been missed (the notification channel broke and
    /// was restored): every open stream should read again.
    Everyone,
}

/// The connector's storage. Writes take the request's verified signature so
/// that its nonce is recorded in the same transaction as its effect; every
/// write is answered once it is durable, and a refusal other than a
/// replayed or expired nonce still consumes the nonce.
#[async_trait::async_trait]
pub trait MailboxStore: Send + Sync + 'static {
    /// Records that `verified`'s nonce was used, with nothing else.
    async fn use_nonce(&self, verified: Verified, now_ms: u64) -> Result<(), MailboxError>;
    /// Stores new tokens created by `verified.party`.
    async fn create_tokens(
        &self,
        verified: Verified,
        tokens: Vec<String>,
        now_ms: u64,
    ) -> Result<(), MailboxError>;
    /// What a token stands for.
    async fn token_info(&self, token: &str) -> Result<Option<TokenInfo>, MailboxError>;
    /// Uses a token: creates connection `connection_id` between its creator
    /// and `verified.party`, and leaves a notice for the creator. A token
    /// already used by `verified.party` answers the connection that use
    /// made ([`Joined::repeated`]) and changes nothing but the nonce; one
    /// used by anyone else is refused ([`MailboxError::TokenUsed`]).
    async fn use_token(
        &self,
        verified: Verified,
        token: String,
        connection_id: String,
        now_ms: u64,
    ) -> Result<Joined, MailboxError>;
    /// Stores an envelope from `verified.party` for the other party.
    async fn send(
        &self,
        verified: Verified,
        connection_id: String,
        envelope: Vec<u8>,
        client_id: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<Sent, MailboxError>;
    /// Stores many envelopes from `verified.party`, each judged as
    /// [`MailboxStore::send`] would judge it alone and in the entries'
    /// order (so a later entry sees what an earlier one stored: a repeated
    /// client id is a retry of it), under one nonce and in one transaction.
    /// The stored entries get increasing ids in the entries' order. `Err`:
    /// nothing is stored (the nonce was refused, or the storage failed);
    /// `Ok`: one result per entry.
    async fn send_batch(
        &self,
        verified: Verified,
        entries: Vec<BatchEntry>,
        now_ms: u64,
    ) -> Result<BatchOutcome, MailboxError>;
    /// `recipient`'s messages with ids above `after`, oldest first: at most
    /// `limit` of them, and no more than `max_bytes` of
    /// [`StoredMessage::wire_len`] in all, except that the first is
    /// returned whatever its size.
    async fn messages_after(
        &self,
        recipient: &PartyKey,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, MailboxError>;
    /// Deletes messages of `verified.party`; returns how many were deleted.
    async fn acknowledge(
        &self,
        verified: Verified,
        ids: Vec<u64>,
        now_ms: u64,
    ) -> Result<u32, MailboxError>;
    /// Revokes a connection of `verified.party`: deletes its messages and
    /// leaves a notice for the other party, whom it returns.
    async fn revoke(
        &self,
        verified: Verified,
        connection_id: String,
        now_ms: u64,
    ) -> Result<PartyKey, MailboxError>;
    /// How many messages wait for `recipient`.
    async fn pending(&self, recipient: &PartyKey) -> Result<u64, MailboxError>;
    /// How many messages wait in all mailboxes, and in the deepest one (a
    /// metric, sampled periodically: one pass over the per-recipient
    /// counts, never over the messages).
    async fn depth(&self) -> Result<MailboxDepth, MailboxError>;
    /// Whether the storage answers now (for the health service).
    async fn healthy(&self) -> bool;
    /// The limits in force.
    fn limits(&self) -> Limits;
    /// The connector's audience: the name requests are signed for.
    fn audience(&self) -> String;
    /// Changes made by others (other instances on the same database), if
    /// the backend can have any. Default: none (an embedded store has one
    /// writer, this process).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }
}

/// A new audience: `confidant-connector:` and 16 random bytes in base64url.
pub(crate) fn new_audience() -> Result<String, MailboxError> {
    use base64::Engine as _;
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(storage)?;
    Ok(format!(
        "confidant-connector:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    ))
}

/// Whether `audience` may name a connector: 1 to
/// [`MAX_AUDIENCE_LEN`](crate::auth::MAX_AUDIENCE_LEN) bytes of printable
/// ASCII.
pub fn valid_audience(audience: &str) -> bool {
    !audience.is_empty()
        && audience.len() <= crate::auth::MAX_AUDIENCE_LEN
        && audience.bytes().all(|byte| byte.is_ascii_graphic())
}

/// Refuses an audience given by the operator that is not a valid one.
pub(crate) fn check_audience(audience: Option<&str>) -> Result<(), MailboxError> {
    match audience {
        Some(audience) if !valid_audience(audience) => Err(MailboxError::Invalid(
            "an audience is 1 to 256 bytes of printable ASCII",
        )),
        _ => Ok(()),
    }
}
