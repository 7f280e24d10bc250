//! Records read back from a store (a damaged file, a restored backup) go
//! through the record decoders: any bytes in any table give a value or a
//! `StoreError`, never a panic, through every typed read, through
//! acknowledging a message of an inbox run, and through
//! `DurableSession::load`.
#![no_main]

use confidant_core::{ConnectionId, SuiteRegistry};
use confidant_store::{
    CounterStore, DurableSession, IdentityStore, InboxStore, MemoryStore, PreKeyStore, RawStore,
    SessionStore, Table, WriteBatch, WriteOp,
};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    // First byte picks the table, the next the key length; the rest is the
    // key and the value.
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Some((&key_len, rest)) = rest.split_first() else {
        return;
    };
    let table = Table::ALL[usize::from(pick) % Table::ALL.len()];
    let key_len = usize::from(key_len).min(rest.len());
    let (key, value) = rest.split_at(key_len);

    let store = MemoryStore::new();
    let mut batch = WriteBatch::new();
    batch.push(WriteOp::Put {
        table,
        key: key.to_vec(),
        value: Zeroizing::new(value.to_vec()),
    });
    // The counter reservation of the connection whose session may be read.
    let connection = ConnectionId::new("fuzz").unwrap();
    if table == Table::Sessions {
        batch.push(WriteOp::Put {
            table: Table::Counters,
            key: connection.as_bytes().to_vec(),
            value: Zeroizing::new(vec![0; 12]),
        });
    }
    let _ = store.commit(batch);

    let _ = store.identity();
    let _ = store.signed_pre_key_ids();
    let _ = store.one_time_pre_key_ids();
    let _ = store.responder_keys();
    let _ = store.connection_ids();
    let _ = store.inbox();
    if table == Table::InboxRuns {
        // Acknowledging a message of a damaged run decodes it too.
        let sequence = key
            .first_chunk::<8>()
            .map_or(0, |bytes| u64::from_be_bytes(*bytes));
        let mut batch = WriteBatch::new();
        batch.delete_inbox(sequence);
        let _ = store.commit(batch);
        let _ = store.inbox();
    }
    if let Ok(id) = std::str::from_utf8(key) {
        if let Ok(id) = ConnectionId::new(id) {
            let _ = store.session(&id);
            let _ = store.reservation(&id);
            let mut registry = SuiteRegistry::new();
            confidant_aes_gcm::register(&mut registry).unwrap();
            let _ = DurableSession::load(&store, &registry, &id, 16);
        }
    }
    let mut inbox_next = WriteBatch::new();
    inbox_next.push_inbox(&confidant_store::InboxEntry {
        sequence: 0,
        connection_id: connection,
        epoch: 0,
        counter: 0,
        plaintext: Zeroizing::new(vec![1]),
    });
    let _ = store.commit(inbox_next);
});
