//! What the supervisor knows about the machine it runs on: its hardware
//! (CPU, memory, GPUs), the memory it may use (cgroup limits included), and
//! what model validation needs to know.

pub mod hardware;
pub mod memory;
pub mod validation;
