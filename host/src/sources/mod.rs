//! Where events come from: decoding raw messages into events; the JetStream and file sources.

pub mod decode;
pub mod file;
pub mod jetstream;

pub use decode::Decoder;
