//! The decoders of untrusted bytes never panic, and valid messages survive
//! a round trip. These are the decoders the fuzz targets exercise.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

use confidant_core::SuiteId;
use confidant_x3dh::{
    IdentityKeyPair, InitialMessageHeader, OneTimePreKey, PreKeyBundle, ResponderKeys,
    SignedPreKey, X25519PublicKey,
};
use proptest::prelude::*;

fn valid_bundle_bytes() -> Vec<u8> {
    let identity = IdentityKeyPair::from_seed([1; 32]);
    let signed_pre_key = SignedPreKey::new(&identity, 5, [2; 32]);
    let mut keys = ResponderKeys::new(identity, signed_pre_key).unwrap();
    keys.add_one_time_pre_key(OneTimePreKey::new(6, [3; 32]))
        .unwrap();
    keys.bundle_with_one_time_pre_key(6, &[SuiteId(1), SuiteId(3)])
        .unwrap()
        .to_bytes()
}

fn valid_initial_bytes() -> Vec<u8> {
    InitialMessageHeader::new(
        IdentityKeyPair::from_seed([4; 32]).public_key(),
        X25519PublicKey::from_bytes([9; 32]),
        5,
        Some(6),
        SuiteId(1),
    )
    .to_bytes(None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = PreKeyBundle::from_bytes(&bytes);
        let _ = InitialMessageHeader::from_bytes(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        for original in [valid_bundle_bytes(), valid_initial_bytes()] {
            let mut mutated = original.clone();
            let index = position.index(mutated.len());
            mutated[index] = value;
            mutated.truncate(cut.index(mutated.len() + 1));
            if let Ok(bundle) = PreKeyBundle::from_bytes(&mutated) {
                // Whatever decodes re-encodes to something that decodes the same.
                prop_assert_eq!(PreKeyBundle::from_bytes(&bundle.to_bytes()).unwrap(), bundle);
            }
            if let Ok(header) = InitialMessageHeader::from_bytes(&mutated) {
                prop_assert_eq!(
                    InitialMessageHeader::from_bytes(&header.to_bytes(None)).unwrap(),
                    header
                );
            }
        }
    }

    #[test]
    fn headers_round_trip(
        seed in any::<[u8; 32]>(),
        ephemeral in any::<[u8; 32]>(),
        signed_pre_key_id in any::<u32>(),
        one_time_pre_key_id in any::<Option<u32>>(),
        suite in any::<u32>(),
    ) {
        let header = InitialMessageHeader::new(
            IdentityKeyPair::from_seed(seed).public_key(),
            X25519PublicKey::from_bytes(ephemeral),
            signed_pre_key_id,
            one_time_pre_key_id,
            SuiteId(suite),
        );
        prop_assert_eq!(InitialMessageHeader::from_bytes(&header.to_bytes(None)).unwrap(), header);
    }

    #[test]
    fn bundles_round_trip(
        seed in any::<[u8; 32]>(),
        signed_pre_key_id in any::<u32>(),
        one_time_pre_key_id in any::<Option<u32>>(),
        suites in proptest::collection::vec(any::<u32>(), 0..16),
    ) {
        let identity = IdentityKeyPair::from_seed(seed);
        let signed_pre_key = SignedPreKey::new(&identity, signed_pre_key_id, seed);
        let mut keys = ResponderKeys::new(identity, signed_pre_key).unwrap();
        let suites: Vec<SuiteId> = suites.into_iter().map(SuiteId).collect();
        let bundle = match one_time_pre_key_id {
            Some(id) => {
                keys.add_one_time_pre_key(OneTimePreKey::new(id, [7; 32])).unwrap();
                keys.bundle_with_one_time_pre_key(id, &suites).unwrap()
            }
            None => keys.bundle(&suites),
        };
        let decoded = PreKeyBundle::from_bytes(&bundle.to_bytes()).unwrap();
        prop_assert_eq!(&decoded, &bundle);
        prop_assert!(decoded.verify(keys.identity_public_key()).is_ok());
    }
}
