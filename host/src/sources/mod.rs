//! Where events come from: decoding raw messages into events; the JetStream and file sources, and a
//! durable subscription on either bus.

mod arrow_json;
pub mod decode;
pub mod file;
pub mod jetstream;
pub mod subscription;

pub use decode::Decoder;
