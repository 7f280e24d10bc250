//! Known-answer vectors from RFCs and specifications, run through
//! Confidant's [`Aead`] trait with [`known_answer`].

use crate::failure::{Failure, ensure};
use confidant_core::{Aead, TAG_LEN};

/// One published AEAD test vector. All fields are lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownAnswer {
    /// Where the vector comes from.
    pub name: &'static str,
    /// The key.
    pub key: &'static str,
    /// The nonce (IV).
    pub nonce: &'static str,
    /// The associated data.
    pub associated_data: &'static str,
    /// The plaintext.
    pub plaintext: &'static str,
    /// The ciphertext, without the tag.
    pub ciphertext: &'static str,
    /// The 16-byte tag.
    pub tag: &'static str,
}

const SUNSCREEN: &str = "4c616469657320616e642047656e746c656d656e206f662074686520636c6173\
                         73206f66202739393a204966204920636f756c64206f6666657220796f75206f\
                         6e6c79206f6e652074697020666f7220746865206675747572652c2073756e73\
                         637265656e20776f756c642062652069742e";

/// RFC 8439 §2.8.2, the ChaCha20-Poly1305 AEAD example ("Ladies and
/// Gentlemen of the class of '99 …").
pub const RFC8439_2_8_2: KnownAnswer = KnownAnswer {
    name: "RFC 8439 §2.8.2 ChaCha20-Poly1305",
    key: "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
    nonce: "070000004041424344454647",
    associated_data: "50515253c0c1c2c3c4c5c6c7",
    plaintext: SUNSCREEN,
    ciphertext: "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6\
                 3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36\
                 92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc\
                 3ff4def08e4b7a9de576d26586cec64b6116",
    tag: "1ae10b594f09e26a7e902ecbd0600691",
};

/// draft-irtf-cfrg-xchacha-03 §A.3.1, the XChaCha20-Poly1305 AEAD example
/// (same key, associated data and plaintext as RFC 8439 §2.8.2, 24-byte
/// nonce).
pub const XCHACHA_DRAFT_A_3_1: KnownAnswer = KnownAnswer {
    name: "draft-irtf-cfrg-xchacha §A.3.1 XChaCha20-Poly1305",
    key: "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
    nonce: "404142434445464748494a4b4c4d4e4f5051525354555657",
    associated_data: "50515253c0c1c2c3c4c5c6c7",
    plaintext: SUNSCREEN,
    ciphertext: "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb\
                 731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452\
                 2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9\
                 21f9664c97637da9768812f615c68b13b52e",
    tag: "c0875924c1c7987947deafd8780acf49",
};

const GCM_KEY_15: &str = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
const GCM_PLAINTEXT_15: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                                1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";

/// The GCM specification (McGrew and Viega, "The Galois/Counter Mode of
/// Operation", 2005), test case 13: AES-256, zero key and IV, empty
/// plaintext.
pub const GCM_SPEC_TEST_CASE_13: KnownAnswer = KnownAnswer {
    name: "GCM specification test case 13 (AES-256, 96-bit IV)",
    key: "0000000000000000000000000000000000000000000000000000000000000000",
    nonce: "000000000000000000000000",
    associated_data: "",
    plaintext: "",
    ciphertext: "",
    tag: "530f8afbc74536b9a963b4f1c4cb738b",
};

/// The GCM specification, test case 14: AES-256, zero key and IV, one zero
/// block.
pub const GCM_SPEC_TEST_CASE_14: KnownAnswer = KnownAnswer {
    name: "GCM specification test case 14 (AES-256, 96-bit IV)",
    key: "0000000000000000000000000000000000000000000000000000000000000000",
    nonce: "000000000000000000000000",
    associated_data: "",
    plaintext: "00000000000000000000000000000000",
    ciphertext: "cea7403d4d606b6e074ec5d3baf39d18",
    tag: "d0d1c8a799996bf0265b98b5d48ab919",
};

/// The GCM specification, test case 15: AES-256, four blocks, no
/// associated data.
pub const GCM_SPEC_TEST_CASE_15: KnownAnswer = KnownAnswer {
    name: "GCM specification test case 15 (AES-256, 96-bit IV)",
    key: GCM_KEY_15,
    nonce: "cafebabefacedbaddecaf888",
    associated_data: "",
    plaintext: GCM_PLAINTEXT_15,
    ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                 8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
    tag: "b094dac5d93471bdec1a502270e3cc6c",
};

/// The GCM specification, test case 16: AES-256, 60 bytes of plaintext, 20
/// bytes of associated data.
pub const GCM_SPEC_TEST_CASE_16: KnownAnswer = KnownAnswer {
    name: "GCM specification test case 16 (AES-256, 96-bit IV)",
    key: GCM_KEY_15,
    nonce: "cafebabefacedbaddecaf888",
    associated_data: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
    plaintext: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    ciphertext: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                 8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
    tag: "76fc6ece0f4e1768cddf8853bb2d551b",
};

/// The AES-256 test cases of the GCM specification with 96-bit IVs (13–16).
pub const GCM_SPEC_AES_256: [KnownAnswer; 4] = [
    GCM_SPEC_TEST_CASE_13,
    GCM_SPEC_TEST_CASE_14,
    GCM_SPEC_TEST_CASE_15,
    GCM_SPEC_TEST_CASE_16,
];

fn decode(vector: &KnownAnswer, field: &str, hex_text: &str) -> Result<Vec<u8>, Failure> {
    hex::decode(hex_text)
        .map_err(|error| Failure::new(vector.name, format!("{field} is not hex: {error}")))
}

/// Runs `vector` through `A`: seal must give its ciphertext and tag (both
/// detached and attached), open must give back the plaintext, and open with
/// the last tag bit flipped must fail.
pub fn known_answer<A: Aead>(vector: &KnownAnswer) -> Result<(), Failure> {
    let check = vector.name;
    let key = decode(vector, "key", vector.key)?;
    let nonce = decode(vector, "nonce", vector.nonce)?;
    let associated_data = decode(vector, "associated_data", vector.associated_data)?;
    let plaintext = decode(vector, "plaintext", vector.plaintext)?;
    let ciphertext = decode(vector, "ciphertext", vector.ciphertext)?;
    let tag = decode(vector, "tag", vector.tag)?;
    ensure(
        tag.len() == TAG_LEN,
        check,
        "the vector's tag is not 16 bytes",
    )?;

    let aead = A::new(&key).map_err(|error| Failure::new(check, error.to_string()))?;

    let mut buffer = plaintext.clone();
    let detached_tag = aead
        .seal_in_place_detached(&nonce, &associated_data, &mut buffer)
        .map_err(|error| Failure::new(check, format!("seal refused: {error}")))?;
    ensure(buffer == ciphertext, check, "ciphertext differs")?;
    ensure(detached_tag[..] == tag[..], check, "tag differs")?;

    let sealed = aead
        .seal(&nonce, &associated_data, &plaintext)
        .map_err(|error| Failure::new(check, format!("seal refused: {error}")))?;
    let mut expected = ciphertext.clone();
    expected.extend_from_slice(&tag);
    ensure(
        sealed == expected,
        check,
        "seal() differs from ciphertext ‖ tag",
    )?;

    let opened = aead
        .open(&nonce, &associated_data, &expected)
        .map_err(|_| Failure::new(check, "open refused the published ciphertext"))?;
    ensure(
        opened == plaintext,
        check,
        "open gave a different plaintext",
    )?;

    let mut forged = expected;
    if let Some(last) = forged.last_mut() {
        *last ^= 1;
    }
    ensure(
        aead.open(&nonce, &associated_data, &forged).is_err(),
        check,
        "open accepted a flipped tag bit",
    )
}
