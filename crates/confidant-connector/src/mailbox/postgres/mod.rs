//! The PostgreSQL mailbox: several stateless connector instances on one
//! database.
//!
//! - Driver: tokio-postgres (async, pipelined, and the only one that hands
//!   out LISTEN notifications as a stream without a pool connection held
//!   by a library task) with deadpool-postgres's pool (timeouts on waiting,
//!   connecting and recycling; a broken connection is dropped, not reused).
//! - Each write is one call of its function (`schema.sql`), one round trip
//!   and one transaction; the tables' constraints carry the guarantees.
//! - After each stored message (a duplicate of a retried send too, in case
//!   the instance that stored it died before announcing it) the instance
//!   NOTIFYs its recipient; `listen` turns other instances' notifications
//!   into [`Change`]s, so a stream open on another instance wakes at once.
//! - Expired nonces and client ids are pruned by each instance every
//!   [`PRUNE_EVERY`].
//!
//! When the database cannot be reached, every call fails with
//! [`MailboxError::Storage`] (the service answers UNAVAILABLE) within
//! [`CALL_TIMEOUT`], and the pool reconnects by itself once it is back.

mod listen;
mod schema;
mod tls;

pub use schema::SCHEMA_VERSION;

use super::ops::{self, pg_answer, pg_id, pg_int, pg_party, pg_row};
use super::{
    BatchEntry, BatchOutcome, Change, Content, Joined, Limits, MailboxDepth, MailboxError,
    MailboxStore, Sent, StoredMessage, TokenInfo, cap_page, check_audience, new_audience, storage,
};
use crate::auth::{PartyKey, Verified};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Longest a call waits for the database (a connection from the pool
/// included) before it fails as unavailable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often each instance prunes expired nonces and client ids.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// Expired rows of each kind pruned per pass.
const PRUNE_LIMIT: i32 = 10_000;
/// Connections of the pool, by default.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The PostgreSQL mailbox store.
pub struct PostgresMailbox {
    pool: deadpool_postgres::Pool,
    limits: Limits,
    audience: String,
    changes: broadcast::Sender<Change>,
    listening: Arc<AtomicBool>,
    notifier: listen::Notifier,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for PostgresMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresMailbox")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn timed_out() -> MailboxError {
    MailboxError::Storage(format!(
        "the database did not answer within {} s",
        CALL_TIMEOUT.as_secs()
    ))
}

impl PostgresMailbox {
    /// Connects to the database at `url` (a libpq-style `postgres://` URL
    /// or key=value string; `options=-csearch_path%3DNAME` picks a schema;
    /// `sslmode` and `sslrootcert` as libpq takes them, see the `tls`
    /// module: `require` and the verifying modes never fall back to
    /// plaintext, `disable` never uses TLS),
    /// applies the migrations this build has and the database lacks, and
    /// starts listening for other instances' messages. Its audience is the
    /// one stored in the database (generated on first start), or
    /// `audience` when given. Call it within a tokio runtime.
    pub async fn connect(
        url: &str,
        limits: Limits,
        audience: Option<String>,
        pool_size: usize,
    ) -> Result<Self, MailboxError> {
        check_audience(audience.as_deref())?;
        let (mut config, tls) = tls::config(url)?;
        let connector = tls::connector(&tls)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives(true);
        let (mut client, connection) =
            config.connect(connector.clone()).await.map_err(|error| {
                MailboxError::Storage(format!(
                    "cannot connect to the database: {}",
                    crate::tls::error_chain(&error)
                ))
            })?;
        let driver = tokio::spawn(connection);
        let stored = schema::migrate(&mut client, &new_audience()?).await;
        drop(client);
        let _ = driver.await;
        let stored = stored?;
        let manager = deadpool_postgres::Manager::from_config(
            config.clone(),
            connector.clone(),
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(storage)?;
        let (changes, _) = broadcast::channel(1024);
        let (stop, stopped) = watch::channel(false);
        let listening = Arc::new(AtomicBool::new(false));
        let instance = new_audience()?
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        let notifier = listen::Notifier::start(pool.clone(), instance.clone());
        tokio::spawn(listen::listen(
            instance,
            config,
            connector,
            changes.clone(),
            stopped.clone(),
            Arc::clone(&listening),
        ));
        tokio::spawn(prune_loop(pool.clone(), stopped));
        Ok(Self {
            pool,
            limits,
            audience: audience.unwrap_or(stored),
            changes,
            listening,
            notifier,
            stop,
        })
    }

    /// Prunes nonces and client ids that expired before `now_ms` (what each
    /// instance does every [`PRUNE_EVERY`]); returns how many rows went.
    pub async fn prune(&self, now_ms: u64) -> Result<u64, MailboxError> {
        prune(&self.pool, now_ms).await
    }

    /// Whether the notification connection is listening.
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Stops listening and pruning; calls in flight still finish.
    pub fn close(&self) {
        let _ = self.stop.send(true);
        self.pool.close();
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, MailboxError> {
        self.pool
            .get()
            .await
            .map_err(|error| MailboxError::Storage(format!("no database connection: {error}")))
    }

    /// One operation function, within [`CALL_TIMEOUT`]: its row.
    async fn call_row(
        &self,
        sql: &str,
        verified: &Verified,
        now_ms: u64,
        rest: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, MailboxError> {
        tokio::time::timeout(CALL_TIMEOUT, async {
            let client = self.client().await?;
            pg_row(&client, sql, verified, now_ms, rest).await
        })
        .await
        .map_err(|_| timed_out())?
    }

    /// One operation function, within [`CALL_TIMEOUT`]: its answer.
    async fn call(
        &self,
        sql: &str,
        verified: &Verified,
        now_ms: u64,
        rest: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<ops::PgAnswer, MailboxError> {
        pg_answer(
            &self.call_row(sql, verified, now_ms, rest).await?,
            self.limits,
        )
    }

    /// A read within [`CALL_TIMEOUT`].
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, MailboxError> {
        tokio::time::timeout(CALL_TIMEOUT, async {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql).await.map_err(storage)?;
            client.query(&statement, params).await.map_err(storage)
        })
        .await
        .map_err(|_| timed_out())?
    }
}

impl Drop for PostgresMailbox {
    fn drop(&mut self) {
        self.close();
    }
}

async fn prune(pool: &deadpool_postgres::Pool, now_ms: u64) -> Result<u64, MailboxError> {
    let now = pg_int(now_ms)?;
    let client = pool.get().await.map_err(storage)?;
    let removed: i64 = client
        .query_one("SELECT confidant_prune($1, $2)", &[&now, &PRUNE_LIMIT])
        .await
        .map_err(storage)?
        .try_get(0)
        .map_err(storage)?;
    Ok(u64::try_from(removed).unwrap_or(0))
}

async fn prune_loop(pool: deadpool_postgres::Pool, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(error) = prune(&pool, crate::auth::now_ms()).await {
            tracing::warn!(%error, "pruning expired nonces failed; trying again later");
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A row of `messages` as a stored message.
fn decode_row(row: &tokio_postgres::Row) -> Result<StoredMessage, MailboxError> {
    let malformed = || MailboxError::Storage("a stored message is malformed".into());
    let id: i64 = row.try_get("id").map_err(storage)?;
    let kind: i16 = row.try_get("kind").map_err(storage)?;
    let content = match kind {
        0 => Content::Envelope(row.try_get("envelope").map_err(storage)?),
        1 => {
            let peer: Vec<u8> = row.try_get("peer").map_err(storage)?;
            Content::ConnectionAdded {
                token: row.try_get("token").map_err(storage)?,
                peer: PartyKey::try_from(peer.as_slice()).map_err(|_| malformed())?,
            }
        }
        2 => Content::ConnectionRevoked,
        _ => return Err(malformed()),
    };
    let received: i64 = row.try_get("received_ms").map_err(storage)?;
    Ok(StoredMessage {
        id: u64::try_from(id).map_err(|_| malformed())?,
        connection_id: row.try_get("connection_id").map_err(storage)?,
        received_at_ms: u64::try_from(received).map_err(|_| malformed())?,
        content,
    })
}

/// A page of a recipient's messages: the rows after the cursor, at most
/// `$3`, while their running size stays within `$4` (the first whatever its
/// size), computed as [`StoredMessage::wire_len`] is.
const MESSAGES_AFTER: &str = "
    SELECT id, connection_id, received_ms, kind, envelope, token, peer FROM (
        SELECT page.*,
               row_number() OVER (ORDER BY id) AS n,
               sum(COALESCE(octet_length(envelope), 0) + COALESCE(octet_length(token) + 32, 0)
                   + octet_length(connection_id) + 64) OVER (ORDER BY id) AS running
        FROM (SELECT * FROM messages WHERE recipient = $1 AND id > $2 ORDER BY id LIMIT $3) page
    ) capped
    WHERE n = 1 OR running <= $4
    ORDER BY id";

#[async_trait::async_trait]
impl MailboxStore for PostgresMailbox {
    async fn use_nonce(&self, verified: Verified, now_ms: u64) -> Result<(), MailboxError> {
        self.call(ops::nonce::POSTGRES, &verified, now_ms, &[])
            .await
            .map(|_| ())
    }

    async fn create_tokens(
        &self,
        verified: Verified,
        tokens: Vec<String>,
        now_ms: u64,
    ) -> Result<(), MailboxError> {
        self.call(ops::tokens::CREATE_POSTGRES, &verified, now_ms, &[&tokens])
            .await
            .map(|_| ())
    }

    async fn token_info(&self, token: &str) -> Result<Option<TokenInfo>, MailboxError> {
        let rows = self
            .query(
                "SELECT creator, used FROM tokens WHERE token = $1",
                &[&token],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let creator: Vec<u8> = row.try_get(0).map_err(storage)?;
        Ok(Some(TokenInfo {
            creator: PartyKey::try_from(creator.as_slice())
                .map_err(|_| MailboxError::Storage("a stored token is malformed".into()))?,
            used: row.try_get(1).map_err(storage)?,
        }))
    }

    async fn use_token(
        &self,
        verified: Verified,
        token: String,
        connection_id: String,
        now_ms: u64,
    ) -> Result<Joined, MailboxError> {
        let row = self
            .call_row(
                ops::tokens::USE_POSTGRES,
                &verified,
                now_ms,
                &[&token, &connection_id],
            )
            .await?;
        let joined = ops::tokens::pg_joined(&row, self.limits)?;
        if !joined.repeated {
            self.notifier.notify(joined.creator).await;
        }
        Ok(joined)
    }

    async fn send(
        &self,
        verified: Verified,
        connection_id: String,
        envelope: Vec<u8>,
        client_id: Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<Sent, MailboxError> {
        if let Err(refused) = ops::send::check(&envelope, self.limits) {
            // As on redb: the refusal consumes the nonce.
            self.use_nonce(verified, now_ms).await?;
            return Err(refused);
        }
        let digest = ops::send::digest(&envelope).to_vec();
        let client_expires = pg_int(ops::send::client_id_expiry(now_ms))?;
        let limit = pg_int(self.limits.max_pending_per_recipient)?;
        let answer = self
            .call(
                ops::send::POSTGRES,
                &verified,
                now_ms,
                &[
                    &connection_id,
                    &envelope,
                    &client_id,
                    &digest,
                    &client_expires,
                    &limit,
                ],
            )
            .await?;
        let sent = Sent {
            id: pg_id(answer.id)?,
            recipient: pg_party(answer.party)?,
            duplicate: answer.duplicate,
        };
        self.notifier.notify(sent.recipient).await;
        Ok(sent)
    }

    async fn send_batch(
        &self,
        verified: Verified,
        entries: Vec<BatchEntry>,
        now_ms: u64,
    ) -> Result<BatchOutcome, MailboxError> {
        let prepared = ops::send_batch::Prepared::new(&entries, self.limits);
        if prepared.is_empty() {
            // As on redb: the refusals consume the nonce.
            self.use_nonce(verified, now_ms).await?;
            return prepared.finish(None, self.limits);
        }
        let client_expires = pg_int(ops::send::client_id_expiry(now_ms))?;
        let limit = pg_int(self.limits.max_pending_per_recipient)?;
        let row = self
            .call_row(
                ops::send_batch::POSTGRES,
                &verified,
                now_ms,
                &[
                    &prepared.connections,
                    &prepared.envelopes,
                    &prepared.client_ids,
                    &prepared.digests,
                    &client_expires,
                    &limit,
                ],
            )
            .await?;
        let outcome = prepared.finish(Some(&row), self.limits)?;
        // Each recipient told once for the batch (a duplicate too, as for
        // a single send).
        let mut recipients: Vec<PartyKey> = outcome
            .iter()
            .filter_map(|result| result.as_ref().ok().map(|sent| sent.recipient))
            .collect();
        recipients.sort_unstable();
        recipients.dedup();
        futures_util::future::join_all(
            recipients
                .into_iter()
                .map(|recipient| self.notifier.notify(recipient)),
        )
        .await;
        Ok(outcome)
    }

    async fn messages_after(
        &self,
        recipient: &PartyKey,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredMessage>, MailboxError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        let recipient = recipient.as_slice();
        let rows = self
            .query(MESSAGES_AFTER, &[&recipient, &after, &limit, &max_bytes])
            .await?;
        let messages = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
        Ok(cap_page(
            messages,
            usize::try_from(max_bytes).unwrap_or(usize::MAX),
        ))
    }

    async fn acknowledge(
        &self,
        verified: Verified,
        ids: Vec<u64>,
        now_ms: u64,
    ) -> Result<u32, MailboxError> {
        // An id beyond 2^63 names no message.
        let ids: Vec<i64> = ids
            .into_iter()
            .filter_map(|id| i64::try_from(id).ok())
            .collect();
        let answer = self
            .call(ops::acknowledge::POSTGRES, &verified, now_ms, &[&ids])
            .await?;
        Ok(u32::try_from(pg_id(answer.id)?).unwrap_or(u32::MAX))
    }

    async fn revoke(
        &self,
        verified: Verified,
        connection_id: String,
        now_ms: u64,
    ) -> Result<PartyKey, MailboxError> {
        let answer = self
            .call(ops::revoke::POSTGRES, &verified, now_ms, &[&connection_id])
            .await?;
        let other = pg_party(answer.party)?;
        self.notifier.notify(other).await;
        Ok(other)
    }

    async fn pending(&self, recipient: &PartyKey) -> Result<u64, MailboxError> {
        let recipient = recipient.as_slice();
        let rows = self
            .query(
                "SELECT pending FROM mailboxes WHERE recipient = $1",
                &[&recipient],
            )
            .await?;
        match rows.first() {
            None => Ok(0),
            Some(row) => {
                let pending: i64 = row.try_get(0).map_err(storage)?;
                Ok(u64::try_from(pending).unwrap_or(0))
            }
        }
    }

    async fn depth(&self) -> Result<MailboxDepth, MailboxError> {
        // `mailboxes` holds one count per recipient, kept by every write:
        // one pass over it, as for the total, and no `GROUP BY` over
        // `messages`.
        let rows = self
            .query(
                "SELECT COALESCE(sum(pending), 0)::bigint, COALESCE(max(pending), 0)::bigint \
                 FROM mailboxes",
                &[],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(MailboxDepth::default());
        };
        let waiting: i64 = row.try_get(0).map_err(storage)?;
        let deepest: i64 = row.try_get(1).map_err(storage)?;
        Ok(MailboxDepth {
            waiting: u64::try_from(waiting).unwrap_or(0),
            deepest: u64::try_from(deepest).unwrap_or(0),
        })
    }

    async fn healthy(&self) -> bool {
        self.query("SELECT 1", &[]).await.is_ok()
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn audience(&self) -> String {
        self.audience.clone()
    }

    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.changes.subscribe())
    }
}
