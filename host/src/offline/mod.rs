//! The offline side, computed by the same code as the online one: `backfill` (a feature
//! set's graph over historical events), point-in-time reads of the offline rows (`history`),
//! training sets built from them (`training`), and the skew check between the online store
//! and the offline rows (`parity`), reference profiles for monitoring (`reference`), and the
//! progress bar the long ones show.

pub mod backfill;
pub mod history;
pub mod parity;
pub mod production;
mod progress;
pub mod reference;
mod sort;
pub mod training;

pub(crate) use progress::Progress;
