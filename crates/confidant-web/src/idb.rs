//! IndexedDB, through web-sys: one database per holder with two object
//! stores, `records` (the engine's tables: key `[table name, key bytes]`,
//! value the record's bytes) and `app` (the page's records: string keys,
//! string or byte values). A commit is **one** readwrite transaction over
//! both, asked for with `durability: "strict"` (the browser flushes it to
//! disk before `complete`), and counts only once its `complete` event has
//! fired.
//!
//! **At rest**, with a key-encryption key given to [`Database::open`], the
//! values of the store's secret tables (and its counter reservations, for
//! integrity) and every page record are sealed before they reach
//! IndexedDB, with the store's own at-rest format
//! ([`confidant_store::at_rest::seal_secret`]: a fresh HKDF-derived
//! AES-256-GCM key per record), bound to the record's place (object store,
//! table, key) so a value moved elsewhere fails to open. A check record
//! tells a wrong key, a missing one, and a database that was not sealed.

use crate::error::{ErrorKind, WebError};
use crate::mirror::{Change, table_name, table_named};
use confidant_store::at_rest::{open_secret, seal_secret};
use confidant_store::{KeyEncryptionKey, Table};
use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::JsCast as _;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbObjectStore, IdbOpenDbRequest, IdbRequest, IdbTransaction};
use zeroize::Zeroizing;

const RECORDS: &str = "records";
const APP: &str = "app";
const VERSION: u32 = 1;
/// The page record that tells whether (and under which key) the database
/// is sealed at rest.
const KEY_CHECK: &str = "at-rest-check";
const KEY_CHECK_VALUE: &[u8] = b"confidant-web at-rest key check v1";

/// Where a record is, as the associated data of its sealed value.
fn record_label(table: Table, key: &[u8]) -> Vec<u8> {
    let mut label = b"indexeddb/records/".to_vec();
    label.extend_from_slice(table.name().as_bytes());
    label.push(0);
    label.extend_from_slice(key);
    label
}

fn app_label(key: &str) -> Vec<u8> {
    let mut label = b"indexeddb/app/".to_vec();
    label.extend_from_slice(key.as_bytes());
    label
}

fn storage(what: &str, error: &JsValue) -> WebError {
    let detail = error
        .dyn_ref::<js_sys::Error>()
        .map(|error| String::from(error.message()))
        .or_else(|| error.as_string())
        .or_else(|| {
            Reflect::get(error, &JsValue::from_str("message"))
                .ok()
                .and_then(|message| message.as_string())
        })
        .unwrap_or_else(|| "no detail".into());
    WebError::new(ErrorKind::Storage, format!("IndexedDB: {what}: {detail}"))
}

/// A change to the page's own records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppChange {
    /// Store text under a key.
    PutText(String, String),
    /// Store bytes under a key.
    PutBytes(String, Zeroizing<Vec<u8>>),
}

/// What the database held when the page started.
pub struct Loaded {
    /// The engine's records.
    pub records: Vec<crate::mirror::StoredRecord>,
    /// The page's records: text values.
    pub text: Vec<(String, String)>,
    /// The page's records: byte values.
    pub bytes: Vec<(String, Zeroizing<Vec<u8>>)>,
}

/// An open database.
pub struct Database {
    db: IdbDatabase,
    kek: Option<KeyEncryptionKey>,
}

type Handler = Closure<dyn FnMut(web_sys::Event)>;

fn request_error(event: &web_sys::Event, otherwise: &str) -> JsValue {
    event
        .target()
        .and_then(|target| target.dyn_into::<IdbRequest>().ok())
        .and_then(|request| request.error().ok().flatten())
        .map_or_else(|| JsValue::from_str(otherwise), JsValue::from)
}

/// Resolves when `request` succeeds, with its result. The handlers are
/// dropped once it has settled (nothing leaks per request).
async fn request_done(request: &IdbRequest, what: &str) -> Result<JsValue, WebError> {
    let mut handlers: Vec<Handler> = Vec::with_capacity(2);
    let promise = Promise::new(&mut |resolve: Function, reject: Function| {
        let success = Handler::new(move |event: web_sys::Event| {
            let result = event
                .target()
                .and_then(|target| target.dyn_into::<IdbRequest>().ok())
                .and_then(|request| request.result().ok())
                .unwrap_or(JsValue::UNDEFINED);
            let _ = resolve.call1(&JsValue::UNDEFINED, &result);
        });
        let failure = Handler::new(move |event: web_sys::Event| {
            let _ = reject.call1(
                &JsValue::UNDEFINED,
                &request_error(&event, "the request failed"),
            );
        });
        request.set_onsuccess(Some(success.as_ref().unchecked_ref()));
        request.set_onerror(Some(failure.as_ref().unchecked_ref()));
        handlers.push(success);
        handlers.push(failure);
    });
    let result = JsFuture::from(promise).await;
    request.set_onsuccess(None);
    request.set_onerror(None);
    drop(handlers);
    result.map_err(|error| storage(what, &error))
}

/// Resolves when `transaction` completes; fails if it errs or is aborted.
async fn transaction_done(transaction: &IdbTransaction, what: &str) -> Result<(), WebError> {
    let mut handlers: Vec<Handler> = Vec::with_capacity(3);
    let promise = Promise::new(&mut |resolve: Function, reject: Function| {
        let complete = Handler::new(move |_: web_sys::Event| {
            let _ = resolve.call0(&JsValue::UNDEFINED);
        });
        let failed = reject.clone();
        let error = Handler::new(move |event: web_sys::Event| {
            let _ = failed.call1(
                &JsValue::UNDEFINED,
                &request_error(&event, "the transaction failed"),
            );
        });
        let abort = Handler::new(move |_: web_sys::Event| {
            let _ = reject.call1(
                &JsValue::UNDEFINED,
                &JsValue::from_str("the transaction was aborted"),
            );
        });
        transaction.set_oncomplete(Some(complete.as_ref().unchecked_ref()));
        transaction.set_onerror(Some(error.as_ref().unchecked_ref()));
        transaction.set_onabort(Some(abort.as_ref().unchecked_ref()));
        handlers.extend([complete, error, abort]);
    });
    let result = JsFuture::from(promise).await;
    transaction.set_oncomplete(None);
    transaction.set_onerror(None);
    transaction.set_onabort(None);
    drop(handlers);
    result.map(|_| ()).map_err(|error| storage(what, &error))
}

fn record_key(table: Table, key: &[u8]) -> JsValue {
    let parts = Array::new();
    parts.push(&JsValue::from_str(&table_name(table)));
    parts.push(&Uint8Array::from(key).buffer());
    parts.into()
}

fn bytes_of(value: &JsValue) -> Option<Zeroizing<Vec<u8>>> {
    if value.is_instance_of::<js_sys::ArrayBuffer>() || value.is_instance_of::<Uint8Array>() {
        Some(Zeroizing::new(Uint8Array::new(value).to_vec()))
    } else {
        None
    }
}

impl Database {
    /// Opens (creating on first use) the holder database `name`, sealing
    /// at rest under `kek` if one is given. A database sealed under
    /// another key, or not sealed, or sealed while no key is given, is
    /// refused by [`Database::load`].
    pub async fn open(name: &str, kek: Option<KeyEncryptionKey>) -> Result<Self, WebError> {
        let global = js_sys::global();
        let factory = Reflect::get(&global, &JsValue::from_str("indexedDB"))
            .ok()
            .filter(|factory| !factory.is_undefined() && !factory.is_null())
            .ok_or_else(|| WebError::new(ErrorKind::Environment, "this page has no IndexedDB"))?
            .unchecked_into::<web_sys::IdbFactory>();
        let request: IdbOpenDbRequest = factory
            .open_with_u32(name, VERSION)
            .map_err(|error| storage("open", &error))?;
        let upgrade = Closure::<dyn FnMut(web_sys::IdbVersionChangeEvent)>::new(
            move |event: web_sys::IdbVersionChangeEvent| {
                let Some(db) = event
                    .target()
                    .and_then(|target| target.dyn_into::<IdbRequest>().ok())
                    .and_then(|request| request.result().ok())
                    .and_then(|db| db.dyn_into::<IdbDatabase>().ok())
                else {
                    return;
                };
                for store in [RECORDS, APP] {
                    if !db.object_store_names().contains(store) {
                        let _ = db.create_object_store(store);
                    }
                }
            },
        );
        request.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
        let opened = request_done(&request, "open").await;
        request.set_onupgradeneeded(None);
        drop(upgrade);
        let db = opened?
            .dyn_into::<IdbDatabase>()
            .map_err(|error| storage("open", &error))?;
        Ok(Self { db, kek })
    }

    /// Closes the database (a later commit fails, as after the tab went
    /// away).
    pub fn close(&self) {
        self.db.close();
    }

    fn transaction(&self, readwrite: bool) -> Result<IdbTransaction, WebError> {
        let names = Array::new();
        names.push(&JsValue::from_str(RECORDS));
        names.push(&JsValue::from_str(APP));
        let mode = JsValue::from_str(if readwrite { "readwrite" } else { "readonly" });
        // `transaction(names, mode, {durability: "strict"})`, called by name:
        // web-sys has the options only behind its unstable APIs. A browser
        // without the option ignores it (and flushes as it always does).
        let options = Object::new();
        Reflect::set(&options, &"durability".into(), &"strict".into())
            .map_err(|error| storage("transaction options", &error))?;
        let open = Reflect::get(&self.db, &"transaction".into())
            .ok()
            .and_then(|open| open.dyn_into::<Function>().ok())
            .ok_or_else(|| {
                WebError::new(ErrorKind::Environment, "IndexedDB has no transaction()")
            })?;
        open.call3(&self.db, &names, &mode, &options)
            .map_err(|error| storage("transaction", &error))?
            .dyn_into::<IdbTransaction>()
            .map_err(|error| storage("transaction", &error))
    }

    fn object_store(transaction: &IdbTransaction, name: &str) -> Result<IdbObjectStore, WebError> {
        transaction
            .object_store(name)
            .map_err(|error| storage("object store", &error))
    }

    /// Reads everything (one readonly transaction).
    pub async fn load(&self) -> Result<Loaded, WebError> {
        let transaction = self.transaction(false)?;
        let records = Self::object_store(&transaction, RECORDS)?;
        let app = Self::object_store(&transaction, APP)?;
        let record_keys = records
            .get_all_keys()
            .map_err(|error| storage("read", &error))?;
        let record_values = records.get_all().map_err(|error| storage("read", &error))?;
        let app_keys = app
            .get_all_keys()
            .map_err(|error| storage("read", &error))?;
        let app_values = app.get_all().map_err(|error| storage("read", &error))?;
        let record_keys = Array::from(&request_done(&record_keys, "read").await?);
        let record_values = Array::from(&request_done(&record_values, "read").await?);
        let app_keys = Array::from(&request_done(&app_keys, "read").await?);
        let app_values = Array::from(&request_done(&app_values, "read").await?);
        let damaged =
            |what: &str| WebError::new(ErrorKind::Storage, format!("IndexedDB holds {what}"));
        let mut loaded = Loaded {
            records: Vec::new(),
            text: Vec::new(),
            bytes: Vec::new(),
        };
        for (key, value) in record_keys.iter().zip(record_values.iter()) {
            let key = Array::from(&key);
            let table = key
                .get(0)
                .as_string()
                .ok_or_else(|| damaged("a record key that is not [table, bytes]"))?;
            let table = table_named(&table).ok_or_else(|| {
                damaged(&format!(
                    "a record of table {table:?}, which this build does not know (written by a newer one?)"
                ))
            })?;
            let key = bytes_of(&key.get(1)).ok_or_else(|| damaged("a record key without bytes"))?;
            let value =
                bytes_of(&value).ok_or_else(|| damaged("a record value that is not bytes"))?;
            let value = match &self.kek {
                Some(kek) if table.is_sealed_at_rest() => {
                    open_secret(kek, &record_label(table, &key), &value)?
                }
                _ => value,
            };
            loaded.records.push((table, key.to_vec(), value));
        }
        let mut checked = false;
        for (key, value) in app_keys.iter().zip(app_values.iter()) {
            let key = key
                .as_string()
                .ok_or_else(|| damaged("a page record without a text key"))?;
            if key == KEY_CHECK {
                let sealed = bytes_of(&value).ok_or_else(|| damaged("a damaged key check"))?;
                let Some(kek) = &self.kek else {
                    return Err(WebError::new(
                        ErrorKind::Storage,
                        "this holder's database is sealed at rest: give its key",
                    ));
                };
                let check = open_secret(kek, &app_label(KEY_CHECK), &sealed).map_err(|_| {
                    WebError::new(
                        ErrorKind::Storage,
                        "wrong at-rest key for this holder's database",
                    )
                })?;
                if check.as_slice() != KEY_CHECK_VALUE {
                    return Err(damaged("a damaged key check"));
                }
                checked = true;
            } else if let Some(kek) = &self.kek {
                // Sealed: a kind byte ('t' text, 'b' bytes), then the value.
                let sealed =
                    bytes_of(&value).ok_or_else(|| damaged("a page record that is not sealed"))?;
                let opened = open_secret(kek, &app_label(&key), &sealed)?;
                match opened.split_first() {
                    Some((b't', text)) => loaded.text.push((
                        key,
                        String::from_utf8(text.to_vec())
                            .map_err(|_| damaged("a page record that is not text"))?,
                    )),
                    Some((b'b', bytes)) => {
                        loaded.bytes.push((key, Zeroizing::new(bytes.to_vec())));
                    }
                    _ => return Err(damaged("a page record of an unknown kind")),
                }
            } else if let Some(text) = value.as_string() {
                loaded.text.push((key, text));
            } else if let Some(bytes) = bytes_of(&value) {
                loaded.bytes.push((key, bytes));
            } else {
                return Err(damaged("a page record that is neither text nor bytes"));
            }
        }
        let empty = loaded.records.is_empty() && loaded.text.is_empty() && loaded.bytes.is_empty();
        if self.kek.is_some() && !checked && !empty {
            return Err(WebError::new(
                ErrorKind::Storage,
                "this holder's database is not sealed at rest; open it without a key",
            ));
        }
        Ok(loaded)
    }

    /// Every stored value as it is in IndexedDB (sealed or not; text as
    /// UTF-8): what someone who copies the browser's profile gets. For
    /// tests.
    pub async fn raw_values(&self) -> Result<Vec<Vec<u8>>, WebError> {
        let transaction = self.transaction(false)?;
        let mut values = Vec::new();
        for name in [RECORDS, APP] {
            let request = Self::object_store(&transaction, name)?
                .get_all()
                .map_err(|error| storage("read", &error))?;
            for value in Array::from(&request_done(&request, "read").await?).iter() {
                if let Some(text) = value.as_string() {
                    values.push(text.into_bytes());
                } else if let Some(bytes) = bytes_of(&value) {
                    values.push(bytes.to_vec());
                }
            }
        }
        Ok(values)
    }

    /// Writes `changes` and `app` in one transaction; `Ok` once it has
    /// completed (is durable), `Err` if it failed or was aborted (nothing
    /// of it is stored).
    pub async fn commit(&self, changes: &[Change], app: &[AppChange]) -> Result<(), WebError> {
        // Sealed before the transaction starts (it must not wait for us).
        let mut sealed_records = Vec::with_capacity(changes.len());
        for change in changes {
            sealed_records.push(match (change, &self.kek) {
                (Change::Put { table, key, value }, Some(kek)) if table.is_sealed_at_rest() => {
                    Some(seal_secret(kek, &record_label(*table, key), value)?)
                }
                _ => None,
            });
        }
        let mut app_values: Vec<(String, JsValue)> = Vec::with_capacity(app.len() + 1);
        for change in app {
            let (key, kind, bytes) = match change {
                AppChange::PutText(key, text) => (key, b't', text.as_bytes()),
                AppChange::PutBytes(key, bytes) => (key, b'b', bytes.as_slice()),
            };
            let value = match &self.kek {
                Some(kek) => {
                    let mut plain = Zeroizing::new(Vec::with_capacity(1 + bytes.len()));
                    plain.push(kind);
                    plain.extend_from_slice(bytes);
                    Uint8Array::from(seal_secret(kek, &app_label(key), &plain)?.as_slice())
                        .buffer()
                        .into()
                }
                None if kind == b't' => JsValue::from_str(&String::from_utf8_lossy(bytes)),
                None => Uint8Array::from(bytes).buffer().into(),
            };
            app_values.push((key.clone(), value));
        }
        // The key check goes with every sealed commit (one more small seal),
        // so the first one of a new database carries it.
        if let Some(kek) = &self.kek {
            let check = seal_secret(kek, &app_label(KEY_CHECK), KEY_CHECK_VALUE)?;
            app_values.push((
                KEY_CHECK.to_owned(),
                Uint8Array::from(check.as_slice()).buffer().into(),
            ));
        }
        let transaction = self.transaction(true)?;
        let write = || -> Result<(), JsValue> {
            let records = transaction.object_store(RECORDS)?;
            for (change, sealed) in changes.iter().zip(&sealed_records) {
                match change {
                    Change::Put { table, key, value } => {
                        let stored = sealed.as_deref().unwrap_or(value.as_slice());
                        records.put_with_key(
                            &Uint8Array::from(stored).buffer(),
                            &record_key(*table, key),
                        )?;
                    }
                    Change::Delete { table, key } => {
                        records.delete(&record_key(*table, key))?;
                    }
                }
            }
            let store = transaction.object_store(APP)?;
            for (key, value) in &app_values {
                store.put_with_key(value, &JsValue::from_str(key))?;
            }
            Ok(())
        };
        if let Err(error) = write() {
            let _ = transaction.abort();
            return Err(storage("write", &error));
        }
        transaction_done(&transaction, "commit").await
    }
}
