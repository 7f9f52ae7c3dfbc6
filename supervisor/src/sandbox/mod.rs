//! Host-side confinement of untrusted workers: the jail plan handed to
//! `ward-worker jail`, cgroups, per-model ids, and the start-up isolation
//! probe.

pub mod cgroup;
pub mod ids;
pub mod jail;
pub mod probe;
