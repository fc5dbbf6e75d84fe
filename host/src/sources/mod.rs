//! Where events come from: decoding raw messages into events, and the JetStream source.

pub mod decode;
pub mod jetstream;

pub use decode::Decoder;
