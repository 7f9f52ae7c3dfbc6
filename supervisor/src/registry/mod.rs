//! What exists: model versions discovered on disk, which of them are admitted,
//! and the supervisor's table of their handles.

pub mod admission;
pub mod discovery;
pub mod supervisor;

pub use supervisor::Supervisor;
