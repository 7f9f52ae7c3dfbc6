//! What the supervisor knows about the machine it runs on.

pub mod hardware;
pub mod validation;
