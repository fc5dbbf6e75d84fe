//! The `aggregate` step: windows, tiles, per-key state and their evaluation as of a time.

mod config;
pub mod spec;
pub mod state;
pub mod step;
pub mod tile;
pub mod window;

pub use config::{AggregateConfig, AggregationConfig};
pub use spec::AggregateSpec;
pub use state::KeyState;
pub use step::{HashFields, StateWrite, StoreTiles, TileHome, TileStore};
pub use tile::{Function, Tile};
pub use window::Window;

#[cfg(test)]
mod tests;
