//! # confidant-web
//!
//! A Confidant holder (wallet) in the browser. It is a **driver** of the same
//! connection engine the native runtime drives (`confidant-engine`: X3DH,
//! the session, the cipher plugins, the durable session and its counter
//! reservations), compiled to WebAssembly: it feeds the engine what the
//! connector delivers and what the page asks for, and carries out the
//! effects the engine returns, in order: commits (IndexedDB transactions),
//! envelopes (gRPC-Web calls), events (the page's callback). No protocol
//! logic lives here.
//!
//! | module | holds | builds on the host |
//! |---|---|---|
//! | [`mirror`] | the engine's store: an in-memory mirror of IndexedDB whose commits are IndexedDB transactions | yes (tested natively) |
//! | [`credentials`] | the page's own records (credentials, the relay key) and their encodings | yes |
//! | [`error`] | typed errors, thrown to JavaScript as `Error`s with a `kind` | yes |
//! | `proto`, `auth`, `invitation` | the connector's `.proto` (client only), its request signatures and the invitation text format: the native crates' own source, compiled here | yes |
//! | `idb`, `transport`, `holder` | IndexedDB, the gRPC-Web client over `fetch`, and the `WebHolder` class exported to JavaScript | `wasm32` only |
//!
//! `docs/web.md` has the API, the storage design and its crash guarantees,
//! and how to build and test the page.

// tonic's generated client names the crate `tonic`; it is tonic without its
// transport, renamed in the workspace (see `tonic-codegen` there).
extern crate tonic_codegen as tonic;

pub mod bench;
pub mod credentials;
pub mod error;
pub mod mirror;

/// The connector's messages and its client, generated from the same
/// `.proto` the connector is built from.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("confidant.connector.v1");
}

/// The connector's request signatures: `confidant-connector`'s own module,
/// compiled here (that crate needs sockets and threads and cannot build for
/// the browser). Only its wire constants and [`auth::signed_bytes`] are
/// used: the browser's clock comes from JavaScript.
#[allow(dead_code, unreachable_pub)]
#[path = "../../confidant-connector/src/auth.rs"]
mod auth;

/// The invitation text format: `confidant-actors`' own module, compiled
/// here (the runtime needs threads).
#[allow(dead_code, unreachable_pub)]
#[path = "../../confidant-actors/src/invitation.rs"]
pub mod invitation;

#[cfg(target_arch = "wasm32")]
mod holder;
#[cfg(target_arch = "wasm32")]
pub mod idb;
#[cfg(target_arch = "wasm32")]
mod transport;

#[cfg(target_arch = "wasm32")]
pub use holder::WebHolder;

use confidant_core::SuiteRegistry;
use confidant_engine::hybrid::Hybrid;
use confidant_engine::setup::Rotation;
use confidant_engine::{Context, ProtocolConfig, Random};
use confidant_store::{RawStore, WriteBatch};
use confidant_x3dh_mlkem768::X3dhMlKem768;
use error::{ErrorKind, WebError};
use std::sync::Arc;

/// The browser's randomness for the engine: Web Crypto's
/// `getRandomValues`, through getrandom's `wasm_js` backend (the operating
/// system's on the host).
#[derive(Debug)]
pub struct BrowserRandom;

impl Random for BrowserRandom {
    fn fill(&self, bytes: &mut [u8]) -> Result<(), String> {
        getrandom::fill(bytes).map_err(|error| format!("no randomness from the browser: {error}"))
    }
}

/// The cipher suites the holder accepts: the same plugins as the native
/// apps.
pub fn suites() -> Result<SuiteRegistry, WebError> {
    let mut suites = SuiteRegistry::new();
    let refused = |error: confidant_core::RegistryError| {
        WebError::new(ErrorKind::Internal, error.to_string())
    };
    confidant_aes_gcm::register(&mut suites).map_err(refused)?;
    confidant_chacha20poly1305::register(&mut suites).map_err(refused)?;
    Ok(suites)
}

/// The key agreement of the browser holder: the post-quantum hybrid, X3DH +
/// ML-KEM-768, with its default settings (a bundle without the hybrid is
/// refused), as the native apps and the bindings use it.
pub fn agreement() -> X3dhMlKem768 {
    X3dhMlKem768::default()
}

/// The changes that bring this holder's keys up to date at `now_seconds`
/// (Unix time, from the page's clock): its identity on first use, and its
/// signed pre-keys with their last-resort KEM keys, rotated as a native
/// node rotates them (`confidant_engine::setup::rotate_signed_pre_keys`).
/// An empty batch when nothing is due.
pub fn key_changes(store: &dyn RawStore, now_seconds: u64) -> Result<WriteBatch, WebError> {
    Ok(confidant_engine::setup::key_changes(
        &Hybrid::new(agreement()),
        &BrowserRandom,
        store,
        now_seconds,
        Rotation::default(),
    )?)
}

/// The engine's context over the keys in `store` (after
/// [`key_changes`] were committed): suites, key agreement, settings and
/// randomness. **The one place the browser build chooses them**, as the
/// native runtime does in its node builder (same plugins, same default
/// offer order, the hybrid).
pub fn engine_context(store: &dyn RawStore) -> Result<Context, WebError> {
    let keys = confidant_engine::setup::responder_keys(store)?
        .ok_or_else(|| WebError::new(ErrorKind::Storage, "the holder's keys are not stored"))?;
    let hybrid = Hybrid::load(agreement(), store, &keys)?;
    let registry = suites()?;
    let built_in = [
        confidant_core::SuiteId::AES_256_GCM_SHA256_COUNTER,
        confidant_core::SuiteId::CHACHA20_POLY1305_COUNTER,
        confidant_core::SuiteId::AES_256_GCM_LFSR,
    ];
    let offered = built_in
        .into_iter()
        .filter(|id| registry.ids().contains(id))
        .collect();
    Ok(Context {
        registry: Arc::new(registry),
        agreement: Arc::new(hybrid),
        keys,
        config: ProtocolConfig::new(offered),
        random: Arc::new(BrowserRandom),
    })
}
