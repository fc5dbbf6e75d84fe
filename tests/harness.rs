//! Shared test harness: where the test plugins are, one engine with an on-disk artifact
//! cache shared by every test, and small helpers to build batches.

pub mod live;
pub mod samples;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use sluice::event::{Batch, Event, Value};
use sluice::plugin::PluginEngine;

/// Path of a Rust test plugin (built by this crate's build script), e.g. `currency`.
pub fn rust_plugin(name: &str) -> PathBuf {
    PathBuf::from(env!("SLUICE_RUST_PLUGINS")).join(format!("{}.wasm", name.replace('-', "_")))
}

/// Path of a Python or JavaScript plugin (e.g. `currency-py`), built by
/// `plugins/build-guests.sh`; panics with the fix when it is missing.
pub fn guest_plugin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("SLUICE_GUEST_PLUGINS")).join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: install the plugin toolchains with `bash plugins/toolchains.sh`, then rebuild \
         (`cargo test` runs plugins/build-guests.sh) or run `bash plugins/build-guests.sh`",
        path.display()
    );
    path
}

/// Reads a plugin file.
pub fn bytes(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The artifact cache folder shared by all tests (so interpreters are compiled once).
pub fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("sluice-test-artifacts")
}

/// One engine per test process, with the shared artifact cache.
pub fn engine() -> Arc<PluginEngine> {
    static ENGINE: OnceLock<Arc<PluginEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| PluginEngine::new(Some(cache_dir())).expect("creating the plugin engine"))
        .clone()
}

/// Rates used by the currency plugin in tests.
pub const RATES: &str = r#"{"USD":1.0,"EUR":1.08,"GBP":1.27,"JPY":0.0067}"#;

/// A batch of transactions with fields `transaction_id, user_id, amount, currency, merchant`.
pub fn transactions(rows: &[(i64, &str, Value, Value, &str)]) -> Batch {
    let fields = ["transaction_id", "user_id", "amount", "currency", "merchant"]
        .map(String::from)
        .to_vec();
    let events = rows
        .iter()
        .map(|(id, user, amount, currency, merchant)| Event {
            key: user.to_string(),
            time: 1_700_000_000_000_000 + id * 1000,
            values: vec![
                Value::Integer(*id),
                Value::Text(user.to_string()),
                amount.clone(),
                currency.clone(),
                Value::Text(merchant.to_string()),
            ],
        })
        .collect();
    Batch { fields, events }
}

/// Text value.
pub fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// The value of `field` in an output event.
pub fn field<'a>(fields: &[String], event: &'a Event, field: &str) -> &'a Value {
    let i = fields
        .iter()
        .position(|f| f == field)
        .unwrap_or_else(|| panic!("no field {field} in {fields:?}"));
    event.values.get(i).unwrap_or(&Value::Null)
}
