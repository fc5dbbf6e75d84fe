//! Where events come from: decoding raw messages into events, the JetStream source and the
//! file source.

pub mod decode;
pub mod file;
pub mod jetstream;

pub use decode::Decoder;
