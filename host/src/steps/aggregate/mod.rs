//! The `aggregate` step's core (issue 4, in progress): windows, tiles and their evaluation
//! as of a time. Pure logic, tested against a straightforward recomputation from raw events;
//! the step itself (config, keyed state in Redis, online evaluation) is not wired yet.

pub mod tile;
pub mod window;

pub use tile::{Function, Tile};
pub use window::Window;
