//! Feature monitoring: profiles of feature rows ([`profile`]), references of what a model
//! trained on with the bins live windows are compared on ([`reference`]), drift scores with
//! the verdict they lead to ([`drift`]), a window's statistics ([`window`]) and the live
//! windows of a running set with their hourly and daily roll-ups ([`live`]).

pub mod drift;
pub mod live;
pub mod profile;
pub mod reference;
pub mod window;
