//! Where events come from: decoding raw messages into events, and the file source (streams are
//! read through [`crate::bus::subscription`]).

pub mod arrow_json;
pub mod decode;
pub mod file;

pub use decode::Decoder;
