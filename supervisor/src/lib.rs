//! The ward supervisor: finds model plugins on disk, runs each model version
//! in its own worker, and serves them.
//!
//! The `ward` binary is a thin wrapper around [`cli::main`], so that the
//! integration tests can build the same entry point under another name.

pub mod cli;
pub mod discovery;
pub mod host;
