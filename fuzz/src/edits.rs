//! Shared by the fuzz targets that mutate an honest encoding: random bytes
//! rarely decode to something that reaches the signature, KEM or DH checks,
//! so an input starting with 0xFF is taken as edits to `honest` instead.

use std::borrow::Cow;

/// `data` itself, or, if it starts with 0xFF, `honest` with the rest of
/// `data` written over it as edits: triples of (offset as u16 BE, taken
/// modulo the length, byte).
pub fn edited_or_raw<'a>(data: &'a [u8], honest: &[u8]) -> Cow<'a, [u8]> {
    match data.split_first() {
        Some((0xFF, edits)) if !honest.is_empty() => {
            let mut bytes = honest.to_vec();
            let len = bytes.len();
            for edit in edits.chunks_exact(3) {
                let offset = usize::from(u16::from_be_bytes([edit[0], edit[1]]));
                if let Some(byte) = bytes.get_mut(offset % len) {
                    *byte = edit[2];
                }
            }
            Cow::Owned(bytes)
        }
        _ => Cow::Borrowed(data),
    }
}
