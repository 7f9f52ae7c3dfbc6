//! How a worker ended, in either mode, and why waiting for it can fail.

use std::os::unix::process::ExitStatusExt;

use nix::sys::signal::Signal;

/// How a worker ended, in either mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The exit code, when it exited (a container's, or the sandbox's pid 1,
    /// reports a signal `n` as `128 + n`).
    pub code: Option<i32>,
    /// The signal that killed it (for a container, read from an exit code
    /// of `128 + n`, which is how its init reports a signal).
    pub signal: Option<i32>,
    /// Docker's own verdict: the container's cgroup ran out of memory.
    pub oom_killed: bool,
}

impl WorkerStatus {
    pub fn from_exit(status: std::process::ExitStatus) -> WorkerStatus {
        WorkerStatus {
            code: status.code(),
            signal: status.signal(),
            oom_killed: false,
        }
    }

    /// The signal that ended the worker; `relayed` reads an exit code above
    /// 128 as `128 + signal`, which is how a process that stood between the
    /// supervisor and the worker (the jail's pid 1, a container's init)
    /// reports its child's death.
    pub fn signal(&self, relayed: bool) -> Option<i32> {
        self.signal.or(self
            .code
            .filter(|c| relayed && *c > 128 && *c < 128 + 65)
            .map(|c| c - 128))
    }

    pub fn describe(&self) -> String {
        let name = |sig: i32| Signal::try_from(sig).map_or("unknown", |s| s.as_str());
        let mut s = match (self.code, self.signal) {
            (Some(code), Some(sig)) => format!("exit status {code} ({})", name(sig)),
            (Some(code), None) => format!("exit status {code}"),
            (None, Some(sig)) => format!("signal {sig} ({})", name(sig)),
            (None, None) => "unknown status".to_owned(),
        };
        if self.oom_killed {
            s.push_str(", OOMKilled");
        }
        s
    }
}

/// Why a worker's end could not be observed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("wait failed: {0}")]
    Wait(String),
    #[error("Docker: {0}")]
    Docker(String),
    #[error("closed its socket and was killed ({0})")]
    Lingered(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_signals_read_as_signals() {
        let s = WorkerStatus {
            code: Some(137),
            signal: None,
            oom_killed: false,
        };
        assert_eq!(s.signal(true), Some(9));
        assert_eq!(s.signal(false), None);
        let plain = WorkerStatus {
            code: Some(70),
            signal: None,
            oom_killed: false,
        };
        assert_eq!(plain.signal(true), None);
        assert_eq!(
            WorkerStatus {
                code: Some(137),
                signal: None,
                oom_killed: true
            }
            .describe(),
            "exit status 137, OOMKilled"
        );
        assert_eq!(
            WorkerStatus {
                code: Some(137),
                signal: Some(9),
                oom_killed: false
            }
            .describe(),
            "exit status 137 (SIGKILL)"
        );
    }
}
