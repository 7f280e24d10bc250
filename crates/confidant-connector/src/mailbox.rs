//! The connector's storage: tokens, connections, mailboxes, used nonces and
//! client message ids, behind [`MailboxStore`]. [`RedbMailbox`] is the
//! embedded default.
//!
//! Every change goes through one writer thread that applies whatever
//! requests are waiting in **one durable transaction** (group commit): a
//! request is answered only after its change is on disk, and concurrent
//! requests share one disk sync.

use crate::auth::{NONCE_LEN, PartyKey, Verified};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;
use tokio::sync::oneshot;

const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("connector_meta");
const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tokens");
const CONNECTIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("connections");
const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
const PENDING: TableDefinition<&[u8], u64> = TableDefinition::new("pending_counts");
const CLIENT_IDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("client_message_ids");
const CLIENT_EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("client_message_id_expiry");
const NONCES: TableDefinition<&[u8], u64> = TableDefinition::new("nonces");
const NONCE_EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("nonce_expiry");

const SCHEMA_KEY: &[u8] = b"schema_version";
const NEXT_ID_KEY: &[u8] = b"next_message_id";
/// The latest time any transaction pruned nonces at (milliseconds): a nonce
/// that expired before it is refused, whatever the clock says now, so a
/// pruned nonce can never be accepted again.
const NONCES_PRUNED_KEY: &[u8] = b"nonces_pruned_before";
/// The connector's audience, generated on first open.
const AUDIENCE_KEY: &[u8] = b"audience";
/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// How long a client message id is remembered.
pub const CLIENT_ID_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Most waiting requests applied in one transaction.
const GROUP_LIMIT: usize = 1024;
/// Expired entries pruned per transaction.
const PRUNE_LIMIT: usize = 256;

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
    /// The storage failed.
    #[error("storage failed: {0}")]
    Storage(String),
}

fn storage(error: impl std::fmt::Display) -> MailboxError {
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

/// A new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Its id.
    pub connection_id: String,
    /// The token's creator, who gets the notice.
    pub creator: PartyKey,
}

/// The connector's storage. Writes take the request's verified signature so
/// that its nonce is recorded in the same transaction as its effect.
pub trait MailboxStore: Send + Sync + 'static {
    /// Records that `verified`'s nonce was used, with nothing else.
    fn use_nonce(&self, verified: Verified, now_ms: u64) -> Reply<()>;
    /// Stores new tokens created by `verified.party`.
    fn create_tokens(&self, verified: Verified, tokens: Vec<String>, now_ms: u64) -> Reply<()>;
    /// What a token stands for.
    fn token_info(&self, token: &str) -> Result<Option<TokenInfo>, MailboxError>;
    /// Uses a token: creates connection `connection_id` between its creator
    /// and `verified.party`, and leaves a notice for the creator.
    fn use_token(
        &self,
        verified: Verified,
        token: String,
        connection_id: String,
        now_ms: u64,
    ) -> Reply<Joined>;
    /// Stores an envelope from `verified.party` for the other party.
    fn send(
        &self,
        verified: Verified,
        connection_id: String,
        envelope: Vec<u8>,
        client_id: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Reply<Sent>;
    /// `recipient`'s messages with ids above `after`, oldest first: at most
    /// `limit` of them, and no more than `max_bytes` of
    /// [`StoredMessage::wire_len`] in all, except that the first is
    /// returned whatever its size.
    fn messages_after(
        &self,
        recipient: &PartyKey,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, MailboxError>;
    /// Deletes messages of `verified.party`; returns how many were deleted.
    fn acknowledge(&self, verified: Verified, ids: Vec<u64>, now_ms: u64) -> Reply<u32>;
    /// Revokes a connection of `verified.party`: deletes its messages and
    /// leaves a notice for the other party, whom it returns.
    fn revoke(&self, verified: Verified, connection_id: String, now_ms: u64) -> Reply<PartyKey>;
    /// How many messages wait for `recipient`.
    fn pending(&self, recipient: &PartyKey) -> Result<u64, MailboxError>;
    /// The limits in force.
    fn limits(&self) -> Limits;
    /// The connector's audience: the name requests are signed for.
    fn audience(&self) -> String;
}

/// An answer that arrives once the change is durable.
pub type Reply<T> = oneshot::Receiver<Result<T, MailboxError>>;

enum Op {
    Nonce,
    CreateTokens(Vec<String>),
    UseToken {
        token: String,
        connection_id: String,
    },
    Send {
        connection_id: String,
        envelope: Vec<u8>,
        client_id: Option<Vec<u8>>,
    },
    Acknowledge(Vec<u64>),
    Revoke(String),
}

enum Answer {
    Unit(oneshot::Sender<Result<(), MailboxError>>),
    Joined(oneshot::Sender<Result<Joined, MailboxError>>),
    Sent(oneshot::Sender<Result<Sent, MailboxError>>),
    Count(oneshot::Sender<Result<u32, MailboxError>>),
    Party(oneshot::Sender<Result<PartyKey, MailboxError>>),
}

enum Outcome {
    Unit,
    Joined(Joined),
    Sent(Sent),
    Count(u32),
    Party(PartyKey),
}

struct Job {
    verified: Verified,
    now_ms: u64,
    op: Op,
    answer: Answer,
}

impl Answer {
    fn send(self, result: Result<Outcome, MailboxError>) {
        fn give<T>(
            sender: oneshot::Sender<Result<T, MailboxError>>,
            result: Result<T, MailboxError>,
        ) {
            let _ = sender.send(result);
        }
        let mismatch = || MailboxError::Storage("internal: mismatched answer".into());
        match self {
            Answer::Unit(sender) => give(
                sender,
                result.and_then(|outcome| match outcome {
                    Outcome::Unit => Ok(()),
                    _ => Err(mismatch()),
                }),
            ),
            Answer::Joined(sender) => give(
                sender,
                result.and_then(|outcome| match outcome {
                    Outcome::Joined(joined) => Ok(joined),
                    _ => Err(mismatch()),
                }),
            ),
            Answer::Sent(sender) => give(
                sender,
                result.and_then(|outcome| match outcome {
                    Outcome::Sent(sent) => Ok(sent),
                    _ => Err(mismatch()),
                }),
            ),
            Answer::Count(sender) => give(
                sender,
                result.and_then(|outcome| match outcome {
                    Outcome::Count(count) => Ok(count),
                    _ => Err(mismatch()),
                }),
            ),
            Answer::Party(sender) => give(
                sender,
                result.and_then(|outcome| match outcome {
                    Outcome::Party(party) => Ok(party),
                    _ => Err(mismatch()),
                }),
            ),
        }
    }
}

/// The redb mailbox store.
pub struct RedbMailbox {
    database: Arc<Database>,
    jobs: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    limits: Limits,
    audience: String,
}

impl std::fmt::Debug for RedbMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbMailbox")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn message_key(recipient: &PartyKey, id: u64) -> [u8; 40] {
    let mut key = [0u8; 40];
    let (party, rest) = key.split_at_mut(32);
    party.copy_from_slice(recipient);
    rest.copy_from_slice(&id.to_be_bytes());
    key
}

fn nonce_key(party: &PartyKey, nonce: &[u8; NONCE_LEN]) -> [u8; 32 + NONCE_LEN] {
    let mut key = [0u8; 32 + NONCE_LEN];
    let (first, rest) = key.split_at_mut(32);
    first.copy_from_slice(party);
    rest.copy_from_slice(nonce);
    key
}

fn encode_message(connection_id: &str, received_at_ms: u64, content: &Content) -> Vec<u8> {
    let id = connection_id.as_bytes();
    let mut bytes = Vec::with_capacity(1 + id.len() + 9 + 64);
    bytes.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    bytes.extend_from_slice(id.get(..id.len().min(255)).unwrap_or_default());
    bytes.extend_from_slice(&received_at_ms.to_be_bytes());
    match content {
        Content::Envelope(envelope) => {
            bytes.push(0);
            bytes.extend_from_slice(envelope);
        }
        Content::ConnectionAdded { token, peer } => {
            bytes.push(1);
            bytes.extend_from_slice(peer);
            bytes.extend_from_slice(token.as_bytes());
        }
        Content::ConnectionRevoked => bytes.push(2),
    }
    bytes
}

fn decode_message(id: u64, bytes: &[u8]) -> Result<StoredMessage, MailboxError> {
    let corrupt = || MailboxError::Storage("a stored message is malformed".into());
    let (&len, rest) = bytes.split_first().ok_or_else(corrupt)?;
    let (connection_id, rest) = rest
        .split_at_checked(usize::from(len))
        .ok_or_else(corrupt)?;
    let (received, rest) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
    let (&kind, payload) = rest.split_first().ok_or_else(corrupt)?;
    let content = match kind {
        0 => Content::Envelope(payload.to_vec()),
        1 => {
            let (peer, token) = payload.split_first_chunk::<32>().ok_or_else(corrupt)?;
            Content::ConnectionAdded {
                token: String::from_utf8(token.to_vec()).map_err(|_| corrupt())?,
                peer: *peer,
            }
        }
        2 => Content::ConnectionRevoked,
        _ => return Err(corrupt()),
    };
    Ok(StoredMessage {
        id,
        connection_id: String::from_utf8(connection_id.to_vec()).map_err(|_| corrupt())?,
        received_at_ms: u64::from_be_bytes(*received),
        content,
    })
}

struct ConnectionRecord {
    parties: [PartyKey; 2],
    revoked: bool,
}

impl ConnectionRecord {
    fn encode(&self) -> [u8; 65] {
        let [first, second] = &self.parties;
        let mut bytes = [0u8; 65];
        let (a, rest) = bytes.split_at_mut(32);
        let (b, revoked) = rest.split_at_mut(32);
        a.copy_from_slice(first);
        b.copy_from_slice(second);
        revoked.fill(u8::from(self.revoked));
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, MailboxError> {
        let malformed = || MailboxError::Storage("a stored connection is malformed".into());
        let bytes: &[u8; 65] = bytes.try_into().map_err(|_| malformed())?;
        let (first, rest) = bytes.split_first_chunk::<32>().ok_or_else(malformed)?;
        let (second, revoked) = rest.split_first_chunk::<32>().ok_or_else(malformed)?;
        Ok(Self {
            parties: [*first, *second],
            revoked: revoked.first().is_some_and(|&revoked| revoked != 0),
        })
    }

    /// The other party, if `party` is one of the two.
    fn other(&self, party: &PartyKey) -> Option<PartyKey> {
        let [first, second] = self.parties;
        if first == *party {
            Some(second)
        } else if second == *party {
            Some(first)
        } else {
            None
        }
    }
}

fn client_key(connection_id: &str, sender: &PartyKey, client_id: &[u8]) -> Vec<u8> {
    let id = connection_id.as_bytes();
    let mut key = Vec::with_capacity(1 + id.len() + 32 + client_id.len());
    key.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(id);
    key.extend_from_slice(sender);
    key.extend_from_slice(client_id);
    key
}

fn expiry_key(expires_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + key.len());
    bytes.extend_from_slice(&expires_ms.to_be_bytes());
    bytes.extend_from_slice(key);
    bytes
}

/// A new audience: `confidant-connector:` and 16 random bytes in base64url.
fn new_audience() -> Result<String, MailboxError> {
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

impl RedbMailbox {
    /// Opens (or creates) the mailbox file at `path`. Its audience is the
    /// one stored in the file (generated and stored on first open).
    pub fn open(path: impl AsRef<Path>, limits: Limits) -> Result<Self, MailboxError> {
        Self::open_with_audience(path, limits, None)
    }

    /// Opens (or creates) the mailbox file at `path`, with `audience` (if
    /// given) instead of the one stored in the file; the stored one is kept
    /// for later opens without an audience.
    pub fn open_with_audience(
        path: impl AsRef<Path>,
        limits: Limits,
        audience: Option<String>,
    ) -> Result<Self, MailboxError> {
        if let Some(audience) = &audience
            && !valid_audience(audience)
        {
            return Err(MailboxError::Invalid(
                "an audience is 1 to 256 bytes of printable ASCII",
            ));
        }
        let database = Database::create(path.as_ref()).map_err(storage)?;
        let txn = database.begin_write().map_err(storage)?;
        let chosen;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let found = meta
                .get(SCHEMA_KEY)
                .map_err(storage)?
                .map(|value| value.value().to_vec());
            match found {
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_be_bytes().as_slice())
                        .map_err(storage)?;
                }
                Some(bytes) if bytes == SCHEMA_VERSION.to_be_bytes() => {}
                Some(_) => {
                    return Err(MailboxError::Storage(format!(
                        "the mailbox file has another schema version than this build's ({SCHEMA_VERSION})"
                    )));
                }
            }
            let stored = meta
                .get(AUDIENCE_KEY)
                .map_err(storage)?
                .map(|value| String::from_utf8(value.value().to_vec()));
            let stored = match stored {
                Some(Ok(stored)) if valid_audience(&stored) => stored,
                Some(_) => {
                    return Err(MailboxError::Storage(
                        "the stored audience is malformed".into(),
                    ));
                }
                None => {
                    let fresh = new_audience()?;
                    meta.insert(AUDIENCE_KEY, fresh.as_bytes())
                        .map_err(storage)?;
                    fresh
                }
            };
            chosen = audience.unwrap_or(stored);
            // Create every table, so that reads never meet a missing one.
            txn.open_table(TOKENS).map_err(storage)?;
            txn.open_table(CONNECTIONS).map_err(storage)?;
            txn.open_table(MESSAGES).map_err(storage)?;
            txn.open_table(PENDING).map_err(storage)?;
            txn.open_table(CLIENT_IDS).map_err(storage)?;
            txn.open_table(CLIENT_EXPIRY).map_err(storage)?;
            txn.open_table(NONCES).map_err(storage)?;
            txn.open_table(NONCE_EXPIRY).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        let database = Arc::new(database);
        let (jobs, receiver) = mpsc::channel();
        let writer = {
            let database = Arc::clone(&database);
            std::thread::Builder::new()
                .name("connector-writer".into())
                .spawn(move || write_loop(&database, &receiver, limits))
                .map_err(storage)?
        };
        Ok(Self {
            database,
            jobs: std::sync::Mutex::new(Some(jobs)),
            writer: std::sync::Mutex::new(Some(writer)),
            limits,
            audience: chosen,
        })
    }

    /// Stops the writer after the requests already queued, so that every
    /// answered request is on disk and the file can be closed.
    pub fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let writer = self.writer.lock().ok().and_then(|mut writer| writer.take());
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    fn submit<T>(
        &self,
        verified: Verified,
        now_ms: u64,
        op: Op,
        answer: impl FnOnce(oneshot::Sender<Result<T, MailboxError>>) -> Answer,
    ) -> Reply<T> {
        let (sender, receiver) = oneshot::channel();
        let job = Job {
            verified,
            now_ms,
            op,
            answer: answer(sender),
        };
        let jobs = self.jobs.lock().ok().and_then(|jobs| jobs.clone());
        let refused = match jobs {
            Some(jobs) => jobs.send(job).err().map(|mpsc::SendError(job)| job.answer),
            None => Some(job.answer),
        };
        if let Some(answer) = refused {
            answer.send(Err(MailboxError::Storage("the mailbox is closed".into())));
        }
        receiver
    }
}

impl Drop for RedbMailbox {
    fn drop(&mut self) {
        self.close();
    }
}

impl MailboxStore for RedbMailbox {
    fn use_nonce(&self, verified: Verified, now_ms: u64) -> Reply<()> {
        self.submit(verified, now_ms, Op::Nonce, Answer::Unit)
    }

    fn create_tokens(&self, verified: Verified, tokens: Vec<String>, now_ms: u64) -> Reply<()> {
        self.submit(verified, now_ms, Op::CreateTokens(tokens), Answer::Unit)
    }

    fn token_info(&self, token: &str) -> Result<Option<TokenInfo>, MailboxError> {
        let txn = self.database.begin_read().map_err(storage)?;
        let tokens = txn.open_table(TOKENS).map_err(storage)?;
        let Some(value) = tokens.get(token.as_bytes()).map_err(storage)? else {
            return Ok(None);
        };
        let value = value.value();
        let creator: PartyKey = value
            .get(..32)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| MailboxError::Storage("a stored token is malformed".into()))?;
        Ok(Some(TokenInfo {
            creator,
            used: value.get(32) == Some(&1),
        }))
    }

    fn use_token(
        &self,
        verified: Verified,
        token: String,
        connection_id: String,
        now_ms: u64,
    ) -> Reply<Joined> {
        self.submit(
            verified,
            now_ms,
            Op::UseToken {
                token,
                connection_id,
            },
            Answer::Joined,
        )
    }

    fn send(
        &self,
        verified: Verified,
        connection_id: String,
        envelope: Vec<u8>,
        client_id: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Reply<Sent> {
        self.submit(
            verified,
            now_ms,
            Op::Send {
                connection_id,
                envelope,
                client_id,
            },
            Answer::Sent,
        )
    }

    fn messages_after(
        &self,
        recipient: &PartyKey,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, MailboxError> {
        let txn = self.database.begin_read().map_err(storage)?;
        let messages = txn.open_table(MESSAGES).map_err(storage)?;
        let start = message_key(recipient, after.saturating_add(1));
        let end = message_key(recipient, u64::MAX);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for entry in messages
            .range(start.as_slice()..=end.as_slice())
            .map_err(storage)?
        {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(storage)?;
            let key = key.value();
            let id = key
                .get(32..40)
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| MailboxError::Storage("a message key is malformed".into()))?;
            let message = decode_message(id, value.value())?;
            bytes = bytes.saturating_add(message.wire_len());
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(message);
        }
        Ok(out)
    }

    fn acknowledge(&self, verified: Verified, ids: Vec<u64>, now_ms: u64) -> Reply<u32> {
        self.submit(verified, now_ms, Op::Acknowledge(ids), Answer::Count)
    }

    fn revoke(&self, verified: Verified, connection_id: String, now_ms: u64) -> Reply<PartyKey> {
        self.submit(verified, now_ms, Op::Revoke(connection_id), Answer::Party)
    }

    fn pending(&self, recipient: &PartyKey) -> Result<u64, MailboxError> {
        let txn = self.database.begin_read().map_err(storage)?;
        let pending = txn.open_table(PENDING).map_err(storage)?;
        Ok(pending
            .get(recipient.as_slice())
            .map_err(storage)?
            .map_or(0, |count| count.value()))
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn audience(&self) -> String {
        self.audience.clone()
    }
}

/// Applies queued jobs in groups, one durable transaction per group.
fn write_loop(database: &Database, jobs: &mpsc::Receiver<Job>, limits: Limits) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_LIMIT {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let txn = match database.begin_write() {
            Ok(txn) => txn,
            Err(error) => {
                let error = storage(error);
                for job in group {
                    job.answer.send(Err(error.clone()));
                }
                continue;
            }
        };
        let mut results = Vec::with_capacity(group.len());
        let mut fatal = None;
        let latest = group.iter().map(|job| job.now_ms).max().unwrap_or(0);
        let now = match prune(&txn, latest) {
            Ok(now) => now,
            Err(error) => {
                fatal = Some(error);
                latest
            }
        };
        for job in &group {
            if fatal.is_some() {
                break;
            }
            match apply(&txn, job, limits, now) {
                Ok(result) => results.push(result),
                Err(Fatal(error)) => fatal = Some(error),
            }
        }
        let committed = match fatal {
            Some(error) => {
                let _ = txn.abort();
                Err(error)
            }
            None => txn.commit().map_err(storage),
        };
        match committed {
            Ok(()) => {
                for (job, result) in group.into_iter().zip(results) {
                    job.answer.send(result);
                }
            }
            Err(error) => {
                tracing::error!(%error, "mailbox commit failed; {} requests refused", group.len());
                for job in group {
                    job.answer.send(Err(error.clone()));
                }
            }
        }
    }
}

/// A storage error that aborts the whole transaction.
struct Fatal(MailboxError);

impl<E: Into<redb::Error>> From<E> for Fatal {
    fn from(error: E) -> Self {
        Fatal(storage(error.into()))
    }
}

/// Prunes expired nonces and client ids at the later of `latest` (the
/// latest clock of the transaction's requests) and the time the previous
/// pruning ran at; returns that time, before which a nonce is refused.
fn prune(txn: &WriteTransaction, latest: u64) -> Result<u64, MailboxError> {
    let now_ms = {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let pruned = meta
            .get(NONCES_PRUNED_KEY)
            .map_err(storage)?
            .and_then(|value| <[u8; 8]>::try_from(value.value()).ok())
            .map_or(0, u64::from_be_bytes);
        if latest > pruned {
            meta.insert(NONCES_PRUNED_KEY, latest.to_be_bytes().as_slice())
                .map_err(storage)?;
        }
        latest.max(pruned)
    };
    prune_expired(txn, NONCE_EXPIRY, NONCES, now_ms)?;
    prune_expired(txn, CLIENT_EXPIRY, CLIENT_IDS, now_ms)?;
    Ok(now_ms)
}

/// Deletes up to [`PRUNE_LIMIT`] entries of an expiry index (`expires (8) ‖
/// key`) that expired before `now_ms`, and each one's `key` in `records`.
fn prune_expired<V: redb::Value + 'static>(
    txn: &WriteTransaction,
    index: TableDefinition<&[u8], ()>,
    records: TableDefinition<&[u8], V>,
    now_ms: u64,
) -> Result<(), MailboxError> {
    let mut expiry = txn.open_table(index).map_err(storage)?;
    let limit = now_ms.to_be_bytes();
    let expired: Vec<Vec<u8>> = expiry
        .range(..limit.as_slice())
        .map_err(storage)?
        .take(PRUNE_LIMIT)
        .filter_map(|entry| entry.ok().map(|(key, _)| key.value().to_vec()))
        .collect();
    if expired.is_empty() {
        return Ok(());
    }
    let mut records = txn.open_table(records).map_err(storage)?;
    for key in expired {
        expiry.remove(key.as_slice()).map_err(storage)?;
        if let Some(inner) = key.get(8..) {
            records.remove(inner).map_err(storage)?;
        }
    }
    Ok(())
}

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

fn store_message(
    txn: &WriteTransaction,
    recipient: &PartyKey,
    connection_id: &str,
    now_ms: u64,
    content: &Content,
    limit: Option<u64>,
) -> Result<Result<u64, MailboxError>, Fatal> {
    let mut pending = txn.open_table(PENDING)?;
    let count = pending
        .get(recipient.as_slice())?
        .map_or(0, |count| count.value());
    if let Some(limit) = limit
        && count >= limit
    {
        return Ok(Err(MailboxError::MailboxFull { limit }));
    }
    pending.insert(recipient.as_slice(), count + 1)?;
    let id = next_id(txn)?;
    txn.open_table(MESSAGES)?.insert(
        message_key(recipient, id).as_slice(),
        encode_message(connection_id, now_ms, content).as_slice(),
    )?;
    Ok(Ok(id))
}

/// Applies one job in the group's transaction, whose pruning ran at
/// `pruned_at` (milliseconds). `Ok(Err(_))` refuses the job and leaves the
/// transaction usable: nothing of the job was written but its nonce, which
/// a refusal consumes (except a replayed or expired one).
fn apply(
    txn: &WriteTransaction,
    job: &Job,
    limits: Limits,
    pruned_at: u64,
) -> Result<Result<Outcome, MailboxError>, Fatal> {
    let party = job.verified.party;
    // The nonce: accepted once, and only while its window lasts. A nonce
    // that expired before this transaction's pruning time may have been
    // pruned, so its absence from the table proves nothing: refuse it.
    if job.verified.expires_ms < pruned_at {
        return Ok(Err(MailboxError::NonceExpired));
    }
    let nonce_key = nonce_key(&party, &job.verified.nonce);
    {
        let mut nonces = txn.open_table(NONCES)?;
        if nonces.get(nonce_key.as_slice())?.is_some() {
            return Ok(Err(MailboxError::NonceReplayed));
        }
        nonces.insert(nonce_key.as_slice(), job.verified.expires_ms)?;
        txn.open_table(NONCE_EXPIRY)?.insert(
            expiry_key(job.verified.expires_ms, &nonce_key).as_slice(),
            (),
        )?;
    }
    match &job.op {
        Op::Nonce => Ok(Ok(Outcome::Unit)),
        Op::CreateTokens(tokens) => {
            let mut table = txn.open_table(TOKENS)?;
            for token in tokens {
                let mut value = Vec::with_capacity(41);
                value.extend_from_slice(&party);
                value.push(0);
                value.extend_from_slice(&job.now_ms.to_be_bytes());
                table.insert(token.as_bytes(), value.as_slice())?;
            }
            Ok(Ok(Outcome::Unit))
        }
        Op::UseToken {
            token,
            connection_id,
        } => {
            let mut tokens = txn.open_table(TOKENS)?;
            let Some(value) = tokens
                .get(token.as_bytes())?
                .map(|value| value.value().to_vec())
            else {
                return Ok(Err(MailboxError::UnknownToken));
            };
            let Some(creator) = value
                .get(..32)
                .and_then(|bytes| <PartyKey>::try_from(bytes).ok())
            else {
                return Err(Fatal(MailboxError::Storage(
                    "a stored token is malformed".into(),
                )));
            };
            if value.get(32) == Some(&1) {
                return Ok(Err(MailboxError::TokenUsed));
            }
            if creator == party {
                return Ok(Err(MailboxError::Invalid(
                    "a token cannot be used by its creator",
                )));
            }
            let mut used = value.clone();
            let Some(flag) = used.get_mut(32) else {
                return Err(Fatal(MailboxError::Storage(
                    "a stored token is malformed".into(),
                )));
            };
            *flag = 1;
            tokens.insert(token.as_bytes(), used.as_slice())?;
            drop(tokens);
            let record = ConnectionRecord {
                parties: [creator, party],
                revoked: false,
            };
            txn.open_table(CONNECTIONS)?
                .insert(connection_id.as_bytes(), record.encode().as_slice())?;
            let notice = Content::ConnectionAdded {
                token: token.clone(),
                peer: party,
            };
            // A notice is never refused for a full mailbox: the connection
            // exists either way.
            match store_message(txn, &creator, connection_id, job.now_ms, &notice, None)? {
                Ok(_) => Ok(Ok(Outcome::Joined(Joined {
                    connection_id: connection_id.clone(),
                    creator,
                }))),
                Err(error) => Ok(Err(error)),
            }
        }
        Op::Send {
            connection_id,
            envelope,
            client_id,
        } => {
            if envelope.is_empty() {
                return Ok(Err(MailboxError::Invalid("the message is empty")));
            }
            if envelope.len() > limits.max_message_len {
                return Ok(Err(MailboxError::TooLarge {
                    len: envelope.len(),
                    limit: limits.max_message_len,
                }));
            }
            let Some(record) = txn
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
            let client = client_id
                .as_ref()
                .map(|client_id| client_key(connection_id, &party, client_id));
            let digest: [u8; 32] = Sha256::digest(envelope).into();
            if let Some(client) = &client
                && let Some(existing) = txn
                    .open_table(CLIENT_IDS)?
                    .get(client.as_slice())?
                    .map(|value| value.value().to_vec())
            {
                // `id (8) ‖ SHA-256 of the envelope (32)`; records written
                // before the digest was kept hold the id alone.
                let (id, stored_digest) = existing.split_first_chunk::<8>().ok_or_else(|| {
                    Fatal(MailboxError::Storage(
                        "a stored client message id is malformed".into(),
                    ))
                })?;
                if !stored_digest.is_empty() && stored_digest != digest.as_slice() {
                    return Ok(Err(MailboxError::ClientIdReused));
                }
                return Ok(Ok(Outcome::Sent(Sent {
                    id: u64::from_be_bytes(*id),
                    recipient,
                    duplicate: true,
                })));
            }
            let id = match store_message(
                txn,
                &recipient,
                connection_id,
                job.now_ms,
                &Content::Envelope(envelope.clone()),
                Some(limits.max_pending_per_recipient),
            )? {
                Ok(id) => id,
                Err(error) => return Ok(Err(error)),
            };
            if let Some(client) = client {
                let expires = job.now_ms.saturating_add(
                    u64::try_from(CLIENT_ID_RETENTION.as_millis()).unwrap_or(u64::MAX),
                );
                let mut value = Vec::with_capacity(40);
                value.extend_from_slice(&id.to_be_bytes());
                value.extend_from_slice(&digest);
                txn.open_table(CLIENT_IDS)?
                    .insert(client.as_slice(), value.as_slice())?;
                txn.open_table(CLIENT_EXPIRY)?
                    .insert(expiry_key(expires, &client).as_slice(), ())?;
            }
            Ok(Ok(Outcome::Sent(Sent {
                id,
                recipient,
                duplicate: false,
            })))
        }
        Op::Acknowledge(ids) => {
            let mut messages = txn.open_table(MESSAGES)?;
            let mut deleted = 0u32;
            for id in ids {
                if messages
                    .remove(message_key(&party, *id).as_slice())?
                    .is_some()
                {
                    deleted += 1;
                }
            }
            drop(messages);
            if deleted > 0 {
                let mut pending = txn.open_table(PENDING)?;
                let count = pending
                    .get(party.as_slice())?
                    .map_or(0, |count| count.value());
                pending.insert(party.as_slice(), count.saturating_sub(u64::from(deleted)))?;
            }
            Ok(Ok(Outcome::Count(deleted)))
        }
        Op::Revoke(connection_id) => {
            let Some(mut record) = txn
                .open_table(CONNECTIONS)?
                .get(connection_id.as_bytes())?
                .map(|value| ConnectionRecord::decode(value.value()))
                .transpose()
                .map_err(Fatal)?
            else {
                return Ok(Err(MailboxError::UnknownConnection));
            };
            let Some(other) = record.other(&party) else {
                return Ok(Err(MailboxError::NotAParty));
            };
            if record.revoked {
                return Ok(Ok(Outcome::Party(other)));
            }
            record.revoked = true;
            txn.open_table(CONNECTIONS)?
                .insert(connection_id.as_bytes(), record.encode().as_slice())?;
            // Delete the connection's waiting messages, for both parties.
            for recipient in record.parties {
                let mut messages = txn.open_table(MESSAGES)?;
                let start = message_key(&recipient, 0);
                let end = message_key(&recipient, u64::MAX);
                let mut doomed = Vec::new();
                for entry in messages.range(start.as_slice()..=end.as_slice())? {
                    let (key, value) = entry?;
                    let stored = decode_message(0, value.value()).map_err(Fatal)?;
                    if stored.connection_id == *connection_id {
                        doomed.push(key.value().to_vec());
                    }
                }
                for key in &doomed {
                    messages.remove(key.as_slice())?;
                }
                drop(messages);
                if !doomed.is_empty() {
                    let mut pending = txn.open_table(PENDING)?;
                    let count = pending
                        .get(recipient.as_slice())?
                        .map_or(0, |count| count.value());
                    pending.insert(
                        recipient.as_slice(),
                        count.saturating_sub(doomed.len() as u64),
                    )?;
                }
            }
            match store_message(
                txn,
                &other,
                connection_id,
                job.now_ms,
                &Content::ConnectionRevoked,
                None,
            )? {
                Ok(_) => Ok(Ok(Outcome::Party(other))),
                Err(error) => Ok(Err(error)),
            }
        }
    }
}

/// Decodes a stored message and checks that it round-trips (fuzzing).
pub(crate) fn fuzz_round_trip(bytes: &[u8]) -> Option<bool> {
    let message = decode_message(7, bytes).ok()?;
    let again = encode_message(
        &message.connection_id,
        message.received_at_ms,
        &message.content,
    );
    Some(decode_message(7, &again).is_ok_and(|decoded| decoded == message))
}
