//! The plugin contract, generated from `wit/plugin.wit` by the one `bindgen!` of the crate:
//! the event types every module shares (the `event` module re-exports them) and the world the
//! plugin runtime instantiates. It is the bottom of the crate and imports nothing from it.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "transform",
    additional_derives: [PartialEq],
});
