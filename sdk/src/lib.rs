//! Write Sluice plugins in Rust.
//!
//! A Sluice plugin is a WebAssembly component implementing the `transform` world of
//! `sluice:plugin@0.1.0` (see `wit/plugin.wit`). With this SDK a plugin is a type that
//! implements [`Plugin`] plus one [`export!`] line; the SDK turns the batch the host sends
//! (field names once per batch, values by position) into [`Event`]s with typed getters and
//! setters, and gathers what the plugin emits into the batch result.
//!
//! ```
//! use sluice_sdk::{Config, Emit, Error, Event, Plugin};
//!
//! /// Adds `amount_cents` (an integer) to every event that has an `amount`.
//! struct Cents;
//!
//! impl Plugin for Cents {
//!     fn init(_config: &Config) -> Result<Self, Error> {
//!         Ok(Cents)
//!     }
//!
//!     fn process(&mut self, mut event: Event<'_>, out: &mut Emit<'_>) -> Result<(), Error> {
//!         if let Some(amount) = event.f64("amount")? {
//!             event.set("amount_cents", (amount * 100.0).round() as i64);
//!         }
//!         out.emit(event);
//!         Ok(())
//!     }
//! }
//!
//! sluice_sdk::export!(Cents);
//! # fn main() {}
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` (crate type `cdylib`); check and
//! try the component with `sluice plugin check` and `sluice plugin run`.
//!
//! A Rust panic aborts the call (the component traps): the host then retries the batch's
//! events one by one, so only the event that panics fails, with the panic message as the
//! reason. Prefer returning an [`Error`], which fails that event alone at no cost.
#![deny(missing_docs)]

mod event;
mod host;

pub use event::{Emit, Event, Value};
pub use host::{log, lookup, Features, Level};

use std::collections::HashMap;
use std::fmt;

/// The raw bindings generated from the WIT contract. Plugins normally do not need them.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "transform",
        pub_export_macro: true,
        export_macro_name: "__export_transform",
        default_bindings_module: "sluice_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

use bindings::sluice::plugin::types as wit;

/// A per-event error: the event fails alone and goes to the dead-letter subject with this
/// message; the rest of the batch goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }

    /// `missing field "<name>"`: a field the plugin requires is absent or null.
    pub fn missing(field: &str) -> Self {
        Error(format!("missing field \"{field}\""))
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error(message.to_string())
    }
}

/// The plugin's configuration from the feature set: string keys and string values
/// (structured values are JSON strings).
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: HashMap<String, String>,
}

impl Config {
    /// The value of `key`, if configured.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The value of `key`, or an error naming the key and what it should hold.
    pub fn require(&self, key: &str, expected: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| Error(format!("config key \"{key}\" is required: {expected}")))
    }

    /// Every configured key and value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl FromIterator<(String, String)> for Config {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Config {
            entries: iter.into_iter().collect(),
        }
    }
}

/// A transformation. One value of this type lives in each plugin instance; the host calls
/// [`Plugin::init`] once, then [`Plugin::prepare`] and [`Plugin::process`] for every batch.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from its configuration. An error refuses the deployment.
    fn init(config: &Config) -> Result<Self, Error>;

    /// The fields this plugin reads; `None` (the default) means every field. When declared,
    /// the host sends only these fields (plus key and time), which makes each call cheaper;
    /// other fields are not visible to [`Plugin::process`] but are kept in the output.
    fn reads(&self) -> Option<Vec<String>> {
        None
    }

    /// Called once per batch before its events, e.g. to fetch what the whole batch needs with
    /// one [`lookup`]. An error fails every event of the batch with that message.
    fn prepare(&mut self, _events: &[Event<'_>]) -> Result<(), Error> {
        Ok(())
    }

    /// Transforms one event: emit it (map), emit nothing (filter) or several (flat-map).
    /// An error fails this event alone.
    fn process(&mut self, event: Event<'_>, out: &mut Emit<'_>) -> Result<(), Error>;
}

/// Exports a [`Plugin`] type as the component's `transformer`.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        const _: () = {
            ::std::thread_local! {
                static INSTANCE: ::std::cell::RefCell<Option<$plugin>> =
                    const { ::std::cell::RefCell::new(None) };
            }
            struct Guest;
            impl $crate::bindings::exports::sluice::plugin::transformer::Guest for Guest {
                fn init(config: ::std::vec::Vec<(String, String)>) -> Result<(), String> {
                    INSTANCE.with(|slot| $crate::__init::<$plugin>(slot, config))
                }
                fn reads() -> Option<::std::vec::Vec<String>> {
                    INSTANCE.with(|slot| slot.borrow().as_ref().and_then(|p| $crate::Plugin::reads(p)))
                }
                fn process(
                    batch: $crate::bindings::sluice::plugin::types::Batch,
                ) -> $crate::bindings::sluice::plugin::types::Processed {
                    INSTANCE.with(|slot| $crate::__process::<$plugin>(slot, batch))
                }
            }
    $crate::bindings::__export_transform!(Guest with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub fn __init<P: Plugin>(slot: &std::cell::RefCell<Option<P>>, config: Vec<(String, String)>) -> Result<(), String> {
    let config: Config = config.into_iter().collect();
    let plugin = P::init(&config).map_err(|e| e.0)?;
    *slot.borrow_mut() = Some(plugin);
    Ok(())
}

#[doc(hidden)]
pub fn __process<P: Plugin>(slot: &std::cell::RefCell<Option<P>>, batch: wit::Batch) -> wit::Processed {
    let mut slot = slot.borrow_mut();
    let count = batch.events.len();
    let Some(plugin) = slot.as_mut() else {
        let outcomes = (0..count).map(|_| Err("plugin not initialised".to_string())).collect();
        return wit::Processed {
            fields: batch.fields,
            outcomes,
        };
    };
    event::run_batch(plugin, batch)
}
