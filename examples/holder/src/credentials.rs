//! The holder's credentials, in a redb file of its own
//! (`DIR/credentials.redb`), apart from the node's store.
//!
//! One table, `credentials`: key = (connection id, inbox sequence number of
//! the message that carried it), value = the credential's JSON. The node
//! reports a message it stored again after a restart until the application
//! acknowledges it, always under the same inbox number; the key makes such
//! a repeat report store nothing. Each store is a durable commit, done
//! before the message is acknowledged, so a crash loses no credential.

use redb::{Database, Durability, ReadableTable as _, TableDefinition};
use std::path::Path;

/// An error with a message for the user.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

const CREDENTIALS: TableDefinition<(&str, u64), &str> = TableDefinition::new("credentials");

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

/// The credentials file, open for writing.
#[derive(Debug)]
pub struct CredentialStore {
    database: Database,
}

impl CredentialStore {
    /// Opens the file at `path`, creating it if there is none.
    pub fn open_or_create(path: &Path) -> Result<Self, Error> {
        let database = Database::create(path)
            .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
        Ok(Self { database })
    }

    /// Stores a credential durably; `false` if this connection's message
    /// `sequence` is already stored (nothing is written then).
    pub fn store(&self, connection_id: &str, sequence: u64, json: &str) -> Result<bool, Error> {
        let mut transaction = self.database.begin_write()?;
        transaction.set_durability(Durability::Immediate)?;
        {
            let mut table = transaction.open_table(CREDENTIALS)?;
            if table.get((connection_id, sequence))?.is_some() {
                return Ok(false);
            }
            table.insert((connection_id, sequence), json)?;
        }
        transaction.commit()?;
        Ok(true)
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
            assert!(store.store("conn-a", 3, r#"{"degree":"BSc"}"#).unwrap());
            // The same message reported again (after a restart): stored once.
            assert!(!store.store("conn-a", 3, r#"{"degree":"BSc"}"#).unwrap());
            // The same number on another connection, or another number, is
            // another credential.
            assert!(store.store("conn-b", 3, r#"{"degree":"MSc"}"#).unwrap());
            assert!(store.store("conn-a", 4, r#"{"degree":"BSc"}"#).unwrap());
        }
        let stored = list(&path).unwrap();
        let keys: Vec<_> = stored
            .iter()
            .map(|credential| (credential.connection_id.as_str(), credential.sequence))
            .collect();
        assert_eq!(keys, [("conn-a", 3), ("conn-a", 4), ("conn-b", 3)]);
        assert_eq!(stored[2].json, r#"{"degree":"MSc"}"#);
        let store = CredentialStore::open_or_create(&path).unwrap();
        assert!(!store.store("conn-b", 3, "{}").unwrap());
        assert_eq!(store.list().unwrap(), stored);
    }
}
