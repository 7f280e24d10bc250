//! Versioned migrations, applied at start under an advisory lock (so
//! instances starting together apply each once), and the check that
//! refuses a database written by a newer build.

use crate::mailbox::{MailboxError, storage};

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 3;

/// Each version's SQL, in order. A new version is appended, never edited.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("schema.sql")),
    // Batch sends: `confidant_send_batch`.
    (2, include_str!("schema_v2.sql")),
    // Joins that can be repeated: `tokens.joiner`, `confidant_join`.
    (3, include_str!("schema_v3.sql")),
];

/// The advisory lock the migrations run under ("confidan").
const MIGRATION_LOCK: i64 = 0x636f_6e66_6964_616e;

/// Brings the database (the first schema of the connection's search path)
/// to [`SCHEMA_VERSION`] and returns its audience: the stored one, or
/// `fresh` stored on first start.
pub(super) async fn migrate(
    client: &mut tokio_postgres::Client,
    fresh: &str,
) -> Result<String, MailboxError> {
    let txn = client.transaction().await.map_err(storage)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(storage)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS confidant_schema_version (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(storage)?;
    let found: i32 = txn
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM confidant_schema_version",
            &[],
        )
        .await
        .map_err(storage)?
        .try_get(0)
        .map_err(storage)?;
    if found > SCHEMA_VERSION {
        return Err(MailboxError::Schema(format!(
            "the database holds connector schema version {found}, newer than this build's \
             ({SCHEMA_VERSION}): run a confidant-connector at least as new as the one that \
             upgraded it"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > found) {
        txn.batch_execute(sql).await.map_err(|error| {
            MailboxError::Schema(format!("migration to version {version} failed: {error}"))
        })?;
        txn.execute(
            "INSERT INTO confidant_schema_version (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(storage)?;
        tracing::info!(version, "connector schema migrated");
    }
    txn.execute(
        "INSERT INTO connector_state (audience) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&fresh],
    )
    .await
    .map_err(storage)?;
    let audience: String = txn
        .query_one("SELECT audience FROM connector_state", &[])
        .await
        .map_err(storage)?
        .try_get(0)
        .map_err(storage)?;
    txn.commit().await.map_err(storage)?;
    Ok(audience)
}
