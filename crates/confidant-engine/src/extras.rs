//! What the engine keeps in [`Table::AgreementKeys`]: the key agreement's
//! own key material beside X3DH's pre-keys (its *extras*, opaque here: the
//! hybrid's signed KEM pre-keys), and when each signed pre-key was made.
//!
//! Keys are a tag byte and a `u32` id, big-endian: `o` ‖ id for the extra
//! of one-time pre-key `id`, `s` ‖ id for the extra of signed pre-key
//! `id`, `t` ‖ id for the second (Unix time, `u64` big-endian) signed
//! pre-key `id` was made. The extras are written in the batch that writes
//! their pre-key and deleted in the batch that deletes it.

use confidant_store::{RawStore, StoreError, Table, WriteBatch, WriteOp};
use zeroize::Zeroizing;

const ONE_TIME: u8 = b'o';
const SIGNED: u8 = b's';
const MADE: u8 = b't';

fn key(tag: u8, id: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(5);
    key.push(tag);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn parse(key: &[u8]) -> Option<(u8, u32)> {
    let (&tag, id) = key.split_first()?;
    Some((tag, u32::from_be_bytes(id.try_into().ok()?)))
}

fn put(batch: &mut WriteBatch, tag: u8, id: u32, value: Zeroizing<Vec<u8>>) {
    batch.push(WriteOp::Put {
        table: Table::AgreementKeys,
        key: key(tag, id),
        value,
    });
}

fn delete(batch: &mut WriteBatch, tag: u8, id: u32) {
    batch.push(WriteOp::Delete {
        table: Table::AgreementKeys,
        key: key(tag, id),
    });
}

/// Stores the extra of one-time pre-key `id`.
pub fn put_one_time(batch: &mut WriteBatch, id: u32, extra: &[u8]) {
    put(batch, ONE_TIME, id, Zeroizing::new(extra.to_vec()));
}

/// Deletes the extra of one-time pre-key `id` (nothing if it has none).
pub fn delete_one_time(batch: &mut WriteBatch, id: u32) {
    delete(batch, ONE_TIME, id);
}

/// The extra of one-time pre-key `id`, if it has one.
pub fn one_time(
    store: &(impl RawStore + ?Sized),
    id: u32,
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    store.get(Table::AgreementKeys, &key(ONE_TIME, id))
}

/// Stores the extra of signed pre-key `id`.
pub fn put_signed(batch: &mut WriteBatch, id: u32, extra: &[u8]) {
    put(batch, SIGNED, id, Zeroizing::new(extra.to_vec()));
}

/// Deletes the extra of signed pre-key `id` and when it was made.
pub fn delete_signed(batch: &mut WriteBatch, id: u32) {
    delete(batch, SIGNED, id);
    delete(batch, MADE, id);
}

/// An extra, by the id of the pre-key it belongs to.
pub type Extra = (u32, Zeroizing<Vec<u8>>);

/// What the store keeps for the signed pre-keys, read in one pass over the
/// table: their extras by id, in increasing order, and when each with a
/// time was made.
#[derive(Default)]
pub struct Signed {
    /// The extras.
    pub extras: Vec<Extra>,
    /// Unix seconds each was made, by id.
    pub made: Vec<(u32, u64)>,
}

/// The signed pre-keys' records (see [`Signed`]). A key that is not a tag
/// and an id, or a time that is not 8 bytes, is `Corrupt`.
pub fn signed_records(store: &(impl RawStore + ?Sized)) -> Result<Signed, StoreError> {
    let mut signed = Signed::default();
    for (key, value) in store.entries(Table::AgreementKeys)? {
        match parse(&key) {
            Some((SIGNED, id)) => signed.extras.push((id, value)),
            Some((MADE, id)) => {
                let seconds = <[u8; 8]>::try_from(value.as_slice())
                    .map_err(|_| StoreError::Corrupt("malformed signed pre-key time".into()))?;
                signed.made.push((id, u64::from_be_bytes(seconds)));
            }
            Some((ONE_TIME, _)) => {}
            _ => return Err(StoreError::Corrupt("malformed agreement key record".into())),
        }
    }
    signed.extras.sort_by_key(|(id, _)| *id);
    Ok(signed)
}

/// Every signed pre-key's extra, by id, in increasing order.
pub fn signed(store: &(impl RawStore + ?Sized)) -> Result<Vec<Extra>, StoreError> {
    Ok(signed_records(store)?.extras)
}

/// Records that signed pre-key `id` was made at `unix_seconds`.
pub fn put_made_at(batch: &mut WriteBatch, id: u32, unix_seconds: u64) {
    put(
        batch,
        MADE,
        id,
        Zeroizing::new(unix_seconds.to_be_bytes().to_vec()),
    );
}
