//! Feature monitoring: profiles of feature rows ([`profile`]), references of what a model
//! trained on with the bins live windows are compared on ([`reference`]), and drift scores
//! with the verdict they lead to ([`drift`]).

pub mod drift;
pub mod profile;
pub mod reference;
