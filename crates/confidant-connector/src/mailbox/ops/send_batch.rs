//! Many envelopes of one sender in one request. Each entry is judged by
//! [`send`]'s rules and nothing else: its checks ([`send::check`]) and, on
//! redb, its steps ([`send::redb`]) called once per entry, in the entries'
//! order, in the one write transaction of the request, under its one
//! nonce. PostgreSQL does the same in `confidant_send_batch`
//! (`postgres/schema_v2.sql`), one round trip, its per-entry branches
//! those of `confidant_send`.

use super::{Redb, RedbResult, pg_id, pg_party, refusal, send};
use crate::mailbox::{BatchEntry, BatchOutcome, Limits, MailboxError, Sent, storage};

/// The redb steps: each entry as [`send`] would store it alone.
pub(in crate::mailbox) fn redb(
    redb: &Redb<'_>,
    entries: &[BatchEntry],
) -> RedbResult<BatchOutcome> {
    let mut outcome = Vec::with_capacity(entries.len());
    for entry in entries {
        let result = match send::check(&entry.envelope, redb.limits) {
            Err(refused) => Err(refused),
            Ok(()) => send::redb(
                redb,
                &entry.connection_id,
                &entry.envelope,
                entry.client_id.as_deref(),
            )?,
        };
        outcome.push(result);
    }
    Ok(Ok(outcome))
}

/// The PostgreSQL call: `$5` connection ids, `$6` envelopes, `$7` client
/// ids (NULL for none), `$8` the envelopes' digests (one per entry each),
/// `$9` the client ids' expiry, `$10` the most messages waiting per
/// recipient. It answers the nonce's code and, per entry, a code, a message
/// id and a recipient.
pub(in crate::mailbox) const POSTGRES: &str = "SELECT code, codes, ids, parties \
     FROM confidant_send_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// A batch split for PostgreSQL: the entries that pass [`send::check`] go
/// to the database (as its arrays); the others are refused here.
pub(in crate::mailbox) struct Prepared<'a> {
    /// Each entry's outcome once known (the checked-out ones at once).
    outcome: Vec<Option<Result<Sent, MailboxError>>>,
    /// The places in the batch of the entries sent to the database.
    places: Vec<usize>,
    pub(in crate::mailbox) connections: Vec<&'a str>,
    pub(in crate::mailbox) envelopes: Vec<&'a [u8]>,
    pub(in crate::mailbox) client_ids: Vec<Option<&'a [u8]>>,
    pub(in crate::mailbox) digests: Vec<Vec<u8>>,
}

impl<'a> Prepared<'a> {
    /// Checks each entry as [`send`] does before the database.
    pub(in crate::mailbox) fn new(entries: &'a [BatchEntry], limits: Limits) -> Self {
        let mut prepared = Self {
            outcome: Vec::with_capacity(entries.len()),
            places: Vec::new(),
            connections: Vec::new(),
            envelopes: Vec::new(),
            client_ids: Vec::new(),
            digests: Vec::new(),
        };
        for (place, entry) in entries.iter().enumerate() {
            match send::check(&entry.envelope, limits) {
                Err(refused) => prepared.outcome.push(Some(Err(refused))),
                Ok(()) => {
                    prepared.outcome.push(None);
                    prepared.places.push(place);
                    prepared.connections.push(&entry.connection_id);
                    prepared.envelopes.push(&entry.envelope);
                    prepared.client_ids.push(entry.client_id.as_deref());
                    prepared
                        .digests
                        .push(send::digest(&entry.envelope).to_vec());
                }
            }
        }
        prepared
    }

    /// Whether no entry goes to the database.
    pub(in crate::mailbox) fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// The outcome, with the database's answer `row` (none: no entry went
    /// to it) for the entries it judged.
    pub(in crate::mailbox) fn finish(
        self,
        row: Option<&tokio_postgres::Row>,
        limits: Limits,
    ) -> Result<BatchOutcome, MailboxError> {
        let Self {
            mut outcome,
            places,
            ..
        } = self;
        if let Some(row) = row {
            let code: String = row.try_get(0).map_err(storage)?;
            if code != "ok" {
                return Err(refusal(&code, limits));
            }
            let codes: Vec<String> = row.try_get(1).map_err(storage)?;
            let ids: Vec<Option<i64>> = row.try_get(2).map_err(storage)?;
            let parties: Vec<Option<Vec<u8>>> = row.try_get(3).map_err(storage)?;
            if codes.len() != places.len()
                || ids.len() != places.len()
                || parties.len() != places.len()
            {
                return Err(MailboxError::Storage(
                    "the database answered a batch with another number of entries".into(),
                ));
            }
            let answers = codes.into_iter().zip(ids).zip(parties);
            for (place, ((code, id), party)) in places.into_iter().zip(answers) {
                let result = match code.as_str() {
                    "ok" | "duplicate" => Ok(Sent {
                        id: pg_id(id)?,
                        recipient: pg_party(party)?,
                        duplicate: code == "duplicate",
                    }),
                    refused => Err(refusal(refused, limits)),
                };
                if let Some(slot) = outcome.get_mut(place) {
                    *slot = Some(result);
                }
            }
        }
        outcome
            .into_iter()
            .map(|result| {
                result.ok_or_else(|| {
                    MailboxError::Storage("internal: a batch entry was not judged".into())
                })
            })
            .collect()
    }
}
