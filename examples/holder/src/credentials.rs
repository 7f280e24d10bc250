//! The holder's credentials, in a redb file of its own
//! (`DIR/credentials.redb`), apart from the node's store.
//!
//! Table `credentials`: key = (connection id, inbox sequence number of the
//! message that carried it), value = the credential's JSON. The node
//! reports a message it stored again after a restart until the application
//! acknowledges it, always under the same inbox number; the key makes such
//! a repeat report store nothing. An issuer that crashed between sending a
//! credential and recording that it did sends it again as a new message;
//! the same JSON on the same connection is stored once too.
//!
//! Table `pending_replies`: the same key, value = the answer the holder
//! owes the issuer for that credential. It is written in the same
//! transaction as the credential and deleted once the answer is with the
//! connector, so a crash between acknowledging a credential and answering
//! it does not lose the answer: it is sent at the next start.
//!
//! Each change is a durable commit, made before the message is
//! acknowledged, so a crash loses no credential.

use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use std::path::Path;

/// An error with a message for the user.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

const CREDENTIALS: TableDefinition<(&str, u64), &str> = TableDefinition::new("credentials");
const PENDING_REPLIES: TableDefinition<(&str, u64), &str> = TableDefinition::new("pending_replies");
const ACCEPTED_INVITATIONS: TableDefinition<&str, &str> =
    TableDefinition::new("accepted_invitations");

/// One stored credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// The connection it came on.
    pub connection_id: String,
    /// The inbox number of the message that carried it.
    pub sequence: u64,
    /// The credential (JSON).
    pub json: String,
}

/// An answer the holder owes the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReply {
    /// The connection to answer on.
    pub connection_id: String,
    /// The inbox number of the credential's message.
    pub sequence: u64,
    /// The answer.
    pub text: String,
}

/// The credentials file, open for writing.
#[derive(Debug)]
pub struct CredentialStore {
    database: Database,
}

impl CredentialStore {
    /// Opens the file at `path`, creating it (mode 0600, like the key
    /// files) if there is none.
    pub fn open_or_create(path: &Path) -> Result<Self, Error> {
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            // redb initialises an empty file.
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(format!("cannot create {}: {error}", path.display()).into()),
        }
        let database = Database::create(path)
            .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
        Ok(Self { database })
    }

    /// Records that the invitation whose token hashes to `invitation`
    /// joined `connection_id`, so that accepting it again says so.
    pub fn record_invitation(&self, invitation: &str, connection_id: &str) -> Result<(), Error> {
        let mut transaction = self.database.begin_write()?;
        transaction.set_durability(Durability::Immediate)?;
        transaction
            .open_table(ACCEPTED_INVITATIONS)?
            .insert(invitation, connection_id)?;
        transaction.commit()?;
        Ok(())
    }

    /// Stores a credential durably, together with the `reply` owed for it
    /// (see [`Self::pending_replies`]). `false` if this connection's message
    /// `sequence`, or the same JSON on this connection, is already stored:
    /// nothing is written then.
    pub fn store(
        &self,
        connection_id: &str,
        sequence: u64,
        json: &str,
        reply: &str,
    ) -> Result<bool, Error> {
        let mut transaction = self.database.begin_write()?;
        transaction.set_durability(Durability::Immediate)?;
        let stored = {
            let mut credentials = transaction.open_table(CREDENTIALS)?;
            let mut known = credentials.get((connection_id, sequence))?.is_some();
            if !known {
                for entry in credentials.range((connection_id, 0)..=(connection_id, u64::MAX))? {
                    let (_, value) = entry?;
                    if value.value() == json {
                        known = true;
                        break;
                    }
                }
            }
            if !known {
                credentials.insert((connection_id, sequence), json)?;
                let mut replies = transaction.open_table(PENDING_REPLIES)?;
                replies.insert((connection_id, sequence), reply)?;
            }
            !known
        };
        if stored {
            transaction.commit()?;
        } else {
            transaction.abort()?;
        }
        Ok(stored)
    }

    /// The answers owed, oldest first.
    pub fn pending_replies(&self) -> Result<Vec<PendingReply>, Error> {
        let transaction = self.database.begin_read()?;
        let table = match transaction.open_table(PENDING_REPLIES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let mut pending = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let (connection_id, sequence) = key.value();
            pending.push(PendingReply {
                connection_id: connection_id.to_owned(),
                sequence,
                text: value.value().to_owned(),
            });
        }
        pending.sort_by_key(|reply| reply.sequence);
        Ok(pending)
    }

    /// The answer for this credential is with the connector: forget it.
    pub fn reply_sent(&self, connection_id: &str, sequence: u64) -> Result<(), Error> {
        let mut transaction = self.database.begin_write()?;
        transaction.set_durability(Durability::Immediate)?;
        transaction
            .open_table(PENDING_REPLIES)?
            .remove((connection_id, sequence))?;
        transaction.commit()?;
        Ok(())
    }

    /// Every stored credential, by connection id and sequence number.
    pub fn list(&self) -> Result<Vec<StoredCredential>, Error> {
        read_all(&self.database)
    }
}

/// Lists the credentials in the file at `path` without opening it for
/// writing (an empty list if there is no file).
pub fn list(path: &Path) -> Result<Vec<StoredCredential>, Error> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let database = redb::ReadOnlyDatabase::open(path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    read_all(&database)
}

/// The connection an invitation (its token's hash) joined, read without
/// opening the file for writing (`None` if there is no file).
pub fn accepted_invitation(path: &Path, invitation: &str) -> Result<Option<String>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    let database = redb::ReadOnlyDatabase::open(path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let transaction = database.begin_read()?;
    let table = match transaction.open_table(ACCEPTED_INVITATIONS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    Ok(table.get(invitation)?.map(|value| value.value().to_owned()))
}

fn read_all(database: &impl redb::ReadableDatabase) -> Result<Vec<StoredCredential>, Error> {
    let transaction = database.begin_read()?;
    let table = match transaction.open_table(CREDENTIALS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let mut credentials = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let (connection_id, sequence) = key.value();
        credentials.push(StoredCredential {
            connection_id: connection_id.to_owned(),
            sequence,
            json: value.value().to_owned(),
        });
    }
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_reported_twice_is_stored_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.redb");
        assert!(list(&path).unwrap().is_empty(), "no file yet");
        {
            let store = CredentialStore::open_or_create(&path).unwrap();
            assert!(store.list().unwrap().is_empty());
            assert!(store.pending_replies().unwrap().is_empty());
            assert!(
                store
                    .store("conn-a", 3, r#"{"degree":"BSc"}"#, "r1")
                    .unwrap()
            );
            // The same message reported again (after a restart): stored once.
            assert!(
                !store
                    .store("conn-a", 3, r#"{"degree":"BSc"}"#, "r1")
                    .unwrap()
            );
            // The same credential sent again in a new message: stored once.
            assert!(
                !store
                    .store("conn-a", 4, r#"{"degree":"BSc"}"#, "r1")
                    .unwrap()
            );
            // The same number on another connection, or another credential,
            // is another credential.
            assert!(
                store
                    .store("conn-b", 3, r#"{"degree":"MSc"}"#, "r2")
                    .unwrap()
            );
            assert!(
                store
                    .store("conn-a", 5, r#"{"degree":"PhD"}"#, "r3")
                    .unwrap()
            );
        }
        let stored = list(&path).unwrap();
        let keys: Vec<_> = stored
            .iter()
            .map(|credential| (credential.connection_id.as_str(), credential.sequence))
            .collect();
        assert_eq!(keys, [("conn-a", 3), ("conn-a", 5), ("conn-b", 3)]);
        assert_eq!(stored[2].json, r#"{"degree":"MSc"}"#);
        let store = CredentialStore::open_or_create(&path).unwrap();
        assert!(!store.store("conn-b", 3, "{}", "r4").unwrap());
        assert_eq!(store.list().unwrap(), stored);
    }

    #[test]
    fn the_file_is_private_and_remembers_accepted_invitations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.redb");
        assert_eq!(accepted_invitation(&path, "abc").unwrap(), None);
        let store = CredentialStore::open_or_create(&path).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        store.record_invitation("abc", "c-1").unwrap();
        drop(store);
        assert_eq!(
            accepted_invitation(&path, "abc").unwrap().as_deref(),
            Some("c-1")
        );
        assert_eq!(accepted_invitation(&path, "abd").unwrap(), None);
    }

    #[test]
    fn an_owed_reply_is_kept_until_it_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.redb");
        {
            let store = CredentialStore::open_or_create(&path).unwrap();
            assert!(
                store
                    .store("conn-a", 7, "{}", "received credential 1")
                    .unwrap()
            );
            assert!(
                store
                    .store("conn-b", 2, "[]", "received credential 2")
                    .unwrap()
            );
        }
        // A crash before the answers left: they are still owed.
        let store = CredentialStore::open_or_create(&path).unwrap();
        let pending = store.pending_replies().unwrap();
        let owed: Vec<_> = pending
            .iter()
            .map(|reply| {
                (
                    reply.connection_id.as_str(),
                    reply.sequence,
                    reply.text.as_str(),
                )
            })
            .collect();
        assert_eq!(
            owed,
            [
                ("conn-b", 2, "received credential 2"),
                ("conn-a", 7, "received credential 1")
            ]
        );
        store.reply_sent("conn-b", 2).unwrap();
        // Forgetting twice is harmless.
        store.reply_sent("conn-b", 2).unwrap();
        assert_eq!(store.pending_replies().unwrap().len(), 1);
        // A credential already stored owes nothing new.
        assert!(
            !store
                .store("conn-b", 2, "[]", "received credential 2")
                .unwrap()
        );
        assert_eq!(store.pending_replies().unwrap().len(), 1);
    }
}
