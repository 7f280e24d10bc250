//! Unit tests of the wasm build, run by `wasm-bindgen-test-runner` under
//! Node (`./scripts/web-test.sh`). Node has no IndexedDB: the script
//! preloads the npm package `fake-indexeddb`, an implementation of the
//! IndexedDB API in JavaScript, so what runs here is this crate's
//! IndexedDB code against that API, and the randomness is Node's Web
//! Crypto. The real browser's IndexedDB is tested by the end-to-end test in
//! Chromium (`tests/tests/web.rs`).

#![cfg(target_arch = "wasm32")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use confidant_core::ConnectionId;
use confidant_store::{InboxEntry, InboxStore as _, RawStore as _, Table, WriteBatch, WriteOp};
use confidant_web::WebHolder;
use confidant_web::idb::{AppChange, Database};
use confidant_web::mirror::Mirror;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;
use zeroize::Zeroizing;

fn unique(label: &str) -> String {
    format!("{label}-{}", js_sys::Math::random())
}

fn quiet() -> js_sys::Function {
    js_sys::Function::new_no_args("")
}

fn entry(connection: &ConnectionId, text: &str) -> InboxEntry {
    InboxEntry {
        sequence: 0,
        connection_id: connection.clone(),
        epoch: 0,
        counter: 0,
        plaintext: Zeroizing::new(text.as_bytes().to_vec()),
    }
}

fn kind_of(error: &JsValue) -> Option<String> {
    js_sys::Reflect::get(error, &JsValue::from_str("kind"))
        .ok()
        .and_then(|kind| kind.as_string())
}

#[wasm_bindgen_test]
async fn a_holder_keeps_its_identity_across_reopening() {
    let name = unique("identity");
    let first = WebHolder::open(name.clone(), quiet(), None).await.unwrap();
    let again = WebHolder::open(name.clone(), quiet(), None).await.unwrap();
    assert_eq!(first.identity_key(), again.identity_key());
    assert_eq!(first.identity_key().len(), 64);
    let other = WebHolder::open(unique("other"), quiet(), None)
        .await
        .unwrap();
    assert_ne!(first.identity_key(), other.identity_key());
}

#[wasm_bindgen_test]
async fn bad_invitations_are_refused_with_their_kind_before_any_network_call() {
    let holder = WebHolder::open(unique("refusals"), quiet(), None)
        .await
        .unwrap();
    for text in [
        "",
        "hello",
        "confidant1:AAAA",
        "confidant2:AAAA",
        "confidant2:!!!",
    ] {
        let error = holder
            .accept_invitation(text.to_owned(), None)
            .await
            .map_err(JsValue::from)
            .expect_err(text);
        assert_eq!(kind_of(&error).as_deref(), Some("invitation"), "{text}");
    }
    // Nothing was stored and no connector is known.
    let connections =
        js_sys::Array::from(&holder.connections().await.map_err(JsValue::from).unwrap());
    assert_eq!(connections.length(), 0);
    let error = holder.waiting().await.map_err(JsValue::from).unwrap_err();
    assert_eq!(kind_of(&error).as_deref(), Some("protocol"));
}

#[wasm_bindgen_test]
async fn committed_batches_are_in_indexeddb_after_reopening_and_a_failed_one_is_nowhere() {
    let name = unique("commits");
    let connection = ConnectionId::new("c-wasm").unwrap();
    let db = Database::open(&name, None).await.unwrap();
    let mut mirror = Mirror::load(db.load().await.unwrap().records).unwrap();
    let mut first = mirror.records().unwrap();
    for round in 0..5u64 {
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::Put {
            table: Table::Counters,
            key: connection.as_bytes().to_vec(),
            value: Zeroizing::new(round.to_be_bytes().to_vec()),
        });
        batch.push_inbox(&entry(&connection, &format!("message {round}")));
        let staged = mirror.stage(batch).unwrap();
        let mut changes = std::mem::take(&mut first);
        changes.extend(staged.changes.iter().cloned());
        let written = db
            .commit(
                &changes,
                &[AppChange::PutText(format!("note/{round}"), "x".into())],
            )
            .await;
        mirror.settle(staged, written.is_ok()).unwrap();
        written.unwrap();
    }
    let reopened = Database::open(&name, None).await.unwrap();
    let loaded = reopened.load().await.unwrap();
    assert_eq!(loaded.text.len(), 5);
    let again = Mirror::load(loaded.records).unwrap();
    for table in Table::ALL {
        assert_eq!(
            again.store().entries(table).unwrap(),
            mirror.store().entries(table).unwrap(),
            "{table:?}"
        );
    }
    assert_eq!(again.store().inbox().unwrap().len(), 5);

    // A commit IndexedDB refuses (a key that is not a valid IndexedDB key
    // cannot occur; a closed database refuses every transaction): the
    // mirror does not take it, and IndexedDB does not have it.
    drop(reopened);
    let mut batch = WriteBatch::new();
    batch.push_inbox(&entry(&connection, "never stored"));
    let staged = mirror.stage(batch).unwrap();
    let closed = Database::open(&name, None).await.unwrap();
    closed.close();
    let written = closed.commit(&staged.changes, &[]).await;
    assert!(written.is_err());
    assert!(mirror.settle(staged, false).is_err());
    assert_eq!(mirror.store().inbox().unwrap().len(), 5);
    let loaded = Database::open(&name, None)
        .await
        .unwrap()
        .load()
        .await
        .unwrap();
    assert_eq!(
        Mirror::load(loaded.records)
            .unwrap()
            .store()
            .inbox()
            .unwrap()
            .len(),
        5
    );
}

#[wasm_bindgen_test]
fn seal_and_open_time_in_the_wasm_build() {
    let start = js_sys::Date::now();
    let timing = confidant_web::bench::seal_open(64, 200, || js_sys::Date::now() - start).unwrap();
    assert!(timing.seal_ns >= 0.0 && timing.open_ns >= 0.0);
    // The engine's context builds here, with the hybrid's keys minted and
    // stored first: randomness from Web Crypto.
    let store = confidant_store::MemoryStore::new();
    assert!(
        confidant_web::engine_context(&store).is_err(),
        "no keys yet"
    );
    let changes = confidant_web::key_changes(&store, 1_000_000).unwrap();
    confidant_store::RawStore::commit(&store, changes).unwrap();
    assert!(confidant_web::engine_context(&store).is_ok());
    // Nothing is due a moment later.
    assert!(
        confidant_web::key_changes(&store, 1_000_001)
            .unwrap()
            .is_empty()
    );
}

/// Every value IndexedDB holds for `name`, as bytes (text as UTF-8).
async fn raw_values(name: &str) -> Vec<Vec<u8>> {
    let db = Database::open(name, None).await.unwrap();
    db.raw_values().await.unwrap()
}

#[wasm_bindgen_test]
async fn sealed_at_rest_no_secret_is_in_indexeddb_and_only_the_right_key_opens_it() {
    let name = unique("sealed");
    let key = vec![7u8; 32];
    let holder = WebHolder::open(name.clone(), quiet(), Some(key.clone()))
        .await
        .unwrap();
    let identity = holder.identity_key();
    drop(holder);
    // The identity's public key is derivable from its seed; what must not
    // be in IndexedDB is the seed, and the page records in plaintext.
    let db = Database::open(
        &name,
        Some(confidant_store::KeyEncryptionKey::from_bytes([7; 32])),
    )
    .await
    .unwrap();
    let loaded = db.load().await.unwrap();
    let seed = loaded
        .records
        .iter()
        .find(|(table, _, _)| *table == Table::Identity)
        .map(|(_, _, value)| value.to_vec())
        .unwrap();
    let relay = loaded
        .bytes
        .iter()
        .find(|(key, _)| key == "relay-key")
        .unwrap()
        .1
        .to_vec();
    let raw = raw_values(&name).await;
    let contains = |needle: &[u8]| {
        raw.iter()
            .any(|value| value.windows(needle.len()).any(|window| window == needle))
    };
    assert!(
        !contains(&seed[seed.len() - 16..]),
        "the identity's secret is in IndexedDB"
    );
    assert!(!contains(&relay[..16]), "the relay key is in IndexedDB");
    // Reopened with the key: the same holder.
    let again = WebHolder::open(name.clone(), quiet(), Some(key))
        .await
        .unwrap();
    assert_eq!(again.identity_key(), identity);
    // A wrong key, no key, a short key: refused, with their kinds.
    for (key, kind) in [
        (Some(vec![8u8; 32]), "storage"),
        (None, "storage"),
        (Some(vec![7u8; 31]), "environment"),
    ] {
        let error = WebHolder::open(name.clone(), quiet(), key)
            .await
            .map(|_| ())
            .map_err(JsValue::from)
            .unwrap_err();
        assert_eq!(kind_of(&error).as_deref(), Some(kind));
    }
    // A database that is not sealed is not opened as if it were.
    let plain = unique("plain");
    WebHolder::open(plain.clone(), quiet(), None).await.unwrap();
    let error = WebHolder::open(plain.clone(), quiet(), Some(vec![7u8; 32]))
        .await
        .map(|_| ())
        .map_err(JsValue::from)
        .unwrap_err();
    assert_eq!(kind_of(&error).as_deref(), Some("storage"));
    // Without a key the same search finds the secrets (so it can fail).
    let plain_loaded = Database::open(&plain, None)
        .await
        .unwrap()
        .load()
        .await
        .unwrap();
    let plain_relay = plain_loaded
        .bytes
        .iter()
        .find(|(key, _)| key == "relay-key")
        .unwrap()
        .1
        .to_vec();
    let plain_raw = raw_values(&plain).await;
    assert!(
        plain_raw
            .iter()
            .any(|value| value.windows(16).any(|window| window == &plain_relay[..16]))
    );
}
