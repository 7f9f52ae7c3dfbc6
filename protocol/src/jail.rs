//! The jail specification: what the supervisor tells the jailer
//! (`ward-worker jail`) about the sandbox to build. It travels hex-encoded in
//! the [`SPEC_ENV`] environment variable, in the same bincode format as the
//! worker protocol.

use wincode::{SchemaRead, SchemaWrite};

use crate::ProtocolError;

/// Environment variable carrying the hex-encoded spec.
pub const SPEC_ENV: &str = "WARD_JAIL_SPEC";

/// Everything the jailer needs, decided by the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct JailSpec {
    /// The supervisor's pid, for the jailer's parent-exit race check.
    pub parent_pid: u32,
    /// The supervisor's socket for this worker, connected before the
    /// filesystem is replaced.
    pub socket: String,
    /// The worker binary to run inside (bound read-only at its own path).
    pub worker: String,
    /// The worker's arguments besides `--fd`.
    pub worker_args: Vec<String>,
    /// `cgroup.procs` files to join, one per hierarchy.
    pub cgroup_procs: Vec<String>,
    /// The plugin's own unprivileged ids (used when started as root).
    pub uid: u32,
    pub gid: u32,
    pub hostname: String,
    /// An empty directory to build the new root on.
    pub new_root: String,
    pub scratch_mb: u64,
    /// Bound read-only and executable at their own paths (the runtime).
    pub read_exec: Vec<String>,
    /// Bound read-only, not executable (the model directory, data).
    pub read_only: Vec<String>,
    pub limits: JailLimits,
    /// The worker's whole environment: already an allow-list.
    pub env: Vec<(String, String)>,
    /// Refuse to run when a layer cannot be applied fully.
    pub strict: bool,
    /// Build the namespaces and the private root. `false` where the host
    /// refuses them (the supervisor's probe; an unprivileged container): the
    /// jailer then applies only the layers that need no privilege.
    pub namespaces: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct JailLimits {
    pub address_space_bytes: u64,
    pub open_files: u64,
    pub processes: u64,
    pub file_size_bytes: u64,
    pub cpu_seconds: u64,
}

impl JailSpec {
    /// Hex of the bincode encoding, for an environment variable.
    pub fn to_hex(&self) -> Result<String, ProtocolError> {
        let bytes = wincode::serialize(self).map_err(|e| ProtocolError::Encode {
            message: "jail spec",
            reason: e.to_string(),
        })?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn from_hex(hex: &str) -> Result<JailSpec, ProtocolError> {
        let malformed = |reason: &str| ProtocolError::Malformed {
            message: "jail spec",
            reason: reason.to_owned(),
        };
        if !hex.len().is_multiple_of(2) {
            return Err(malformed("odd hex length"));
        }
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<_, _>>()
            .map_err(|_| malformed("not hex"))?;
        crate::codec::decode(&bytes, "jail spec")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex() {
        let spec = JailSpec {
            parent_pid: 1,
            socket: "/run/w.sock".into(),
            worker: "/usr/bin/ward-worker".into(),
            worker_args: vec!["--spin-us".into(), "50".into()],
            cgroup_procs: vec!["/sys/fs/cgroup/memory/ward/x/cgroup.procs".into()],
            uid: 200_001,
            gid: 200_001,
            hostname: "plugin".into(),
            new_root: "/run/ward/jail-x".into(),
            scratch_mb: 64,
            read_exec: vec!["/usr".into()],
            read_only: vec!["/models/m/1.0.0".into()],
            limits: JailLimits {
                address_space_bytes: 1 << 31,
                open_files: 256,
                processes: 64,
                file_size_bytes: 64 << 20,
                cpu_seconds: 3600,
            },
            env: vec![("PATH".into(), "/usr/bin".into())],
            strict: false,
            namespaces: true,
        };
        assert_eq!(JailSpec::from_hex(&spec.to_hex().unwrap()).unwrap(), spec);
        assert!(JailSpec::from_hex("abc").is_err());
        assert!(JailSpec::from_hex("zz").is_err());
        assert!(JailSpec::from_hex("00").is_err());
    }
}
