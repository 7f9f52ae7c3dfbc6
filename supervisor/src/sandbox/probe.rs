//! The startup probe of what this host can enforce around a plugin: landlock,
//! seccomp filters, namespaces, cgroup controllers, Docker.
//!
//! The jailer applies each layer best effort, so a layer the kernel lacks
//! would otherwise go unnoticed. The supervisor records this report at start,
//! shows it in its health output, and in strict mode refuses to start when
//! [`IsolationReport::missing`] is not empty.
//!
//! Namespaces are tried for real rather than inferred from `/proc/self/ns`: a
//! kernel can have the namespace type and still refuse it (sysctls, LSMs, a
//! container's seccomp profile). Each try runs in a forked child that makes
//! the one `unshare` call, reports through a pipe and `_exit`s.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, pipe2, read, write};
use serde::Serialize;

use crate::sandbox::cgroup::{self, CgroupSupport};

/// `LANDLOCK_CREATE_RULESET_VERSION`: with it, `landlock_create_ruleset`
/// returns the ABI version instead of a ruleset.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// How long the Docker socket may take to accept a connection.
const DOCKER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The namespaces probed: report name, `/proc/self/ns` entry, clone flag.
const NAMESPACES: [(&str, &str, libc::c_int); 7] = [
    ("user", "user", libc::CLONE_NEWUSER),
    ("mount", "mnt", libc::CLONE_NEWNS),
    ("net", "net", libc::CLONE_NEWNET),
    ("pid", "pid", libc::CLONE_NEWPID),
    ("ipc", "ipc", libc::CLONE_NEWIPC),
    ("uts", "uts", libc::CLONE_NEWUTS),
    ("cgroup", "cgroup", libc::CLONE_NEWCGROUP),
];

/// The namespaces a strict sandbox needs, with their name in `missing`.
const STRICT_NAMESPACES: [(&str, &str); 6] = [
    ("user", "user namespace"),
    ("mount", "mount namespace"),
    ("net", "net namespace"),
    ("pid", "pid namespace"),
    ("ipc", "ipc namespace"),
    ("uts", "uts namespace"),
];

const REQUIRED_FOR_STRICT: [&str; 12] = [
    "landlock",
    "seccomp",
    "user namespace",
    "mount namespace",
    "net namespace",
    "pid namespace",
    "ipc namespace",
    "uts namespace",
    "cgroup memory",
    "cgroup pids",
    "cgroup cpu",
    "root or unprivileged user namespaces",
];

/// The layers a strict sandbox requires, as named in
/// [`IsolationReport::missing`].
pub fn required_for_strict() -> &'static [&'static str] {
    &REQUIRED_FOR_STRICT
}

/// What the host offers, probed once at startup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IsolationReport {
    pub running_as_root: bool,
    /// The landlock ABI version; `None` when the kernel lacks landlock or has
    /// it disabled.
    pub landlock_abi: Option<u8>,
    /// Whether seccomp BPF filters can be installed with the actions the
    /// jailer uses (`errno` and `kill_process`).
    pub seccomp_filter: bool,
    /// The kernel's `seccomp/actions_avail`, empty when it has no such file.
    pub seccomp_actions: Vec<String>,
    /// user, mount, net, pid, ipc, uts, cgroup: whether this process can
    /// create one (without root: inside a new user namespace, as the jailer
    /// would).
    pub namespaces: BTreeMap<String, bool>,
    /// Whether an unprivileged process may create user namespaces.
    pub unprivileged_userns: bool,
    pub cgroup: CgroupSupport,
    /// Whether the Docker engine's socket accepts connections.
    pub docker_reachable: bool,
    /// The layers of [`required_for_strict`] this host lacks.
    pub missing: Vec<String>,
}

impl IsolationReport {
    /// Whether every layer of a strict sandbox is available.
    pub fn strict_capable(&self) -> bool {
        self.missing.is_empty()
    }

    /// Whether the jailer can build its namespaces here: mount, net, ipc,
    /// uts, pid and cgroup, inside a user namespace when not root. Without
    /// them (ward in an unprivileged container) a jailed worker keeps the
    /// layers that need no privilege: rlimits, no_new_privs, landlock,
    /// seccomp, a scrubbed environment and descriptors.
    pub fn jail_namespaces(&self) -> bool {
        let has = |k: &str| self.namespaces.get(k).copied().unwrap_or(false);
        ["mount", "net", "ipc", "uts", "pid", "cgroup"]
            .iter()
            .all(|k| has(k))
            && (self.running_as_root || has("user"))
    }
}

/// Probes the host. Blocking, and fast (a few milliseconds: one fork per
/// namespace, and at worst [`DOCKER_CONNECT_TIMEOUT`] for a Docker socket
/// that does not answer); run it off the async threads.
pub fn probe() -> IsolationReport {
    let running_as_root = nix::unistd::geteuid().is_root();
    let (seccomp_filter, seccomp_actions) = seccomp();
    let namespaces: BTreeMap<String, bool> = NAMESPACES
        .iter()
        .map(|&(name, entry, flag)| {
            let exists = Path::new("/proc/self/ns").join(entry).exists();
            // Without root, only a user namespace can be created on its own;
            // the jailer then creates the others inside it.
            let flags = if running_as_root || flag == libc::CLONE_NEWUSER {
                flag
            } else {
                flag | libc::CLONE_NEWUSER
            };
            (name.to_owned(), exists && can_unshare(flags))
        })
        .collect();
    let unprivileged_userns = userns_sysctls_allow()
        // Without root the user namespace try above was an unprivileged one.
        && (running_as_root || namespaces.get("user").copied().unwrap_or(false));
    let mut report = IsolationReport {
        running_as_root,
        landlock_abi: landlock_abi(),
        seccomp_filter,
        seccomp_actions,
        namespaces,
        unprivileged_userns,
        cgroup: cgroup::available(),
        docker_reachable: docker_reachable(&docker_socket()),
        missing: Vec::new(),
    };
    report.missing = missing_layers(&report);
    report
}

/// The layers of [`required_for_strict`] that `report` shows absent, in
/// that order.
fn missing_layers(report: &IsolationReport) -> Vec<String> {
    let mut missing = Vec::new();
    if report.landlock_abi.is_none() {
        missing.push("landlock");
    }
    if !report.seccomp_filter {
        missing.push("seccomp");
    }
    for (key, layer) in STRICT_NAMESPACES {
        if !report.namespaces.get(key).copied().unwrap_or(false) {
            missing.push(layer);
        }
    }
    for controller in cgroup::CONTROLLERS {
        if !report.cgroup.usable(controller) {
            missing.push(match controller {
                "memory" => "cgroup memory",
                "pids" => "cgroup pids",
                _ => "cgroup cpu",
            });
        }
    }
    if !(report.running_as_root || report.unprivileged_userns) {
        missing.push("root or unprivileged user namespaces");
    }
    missing.into_iter().map(str::to_owned).collect()
}

fn landlock_abi() -> Option<u8> {
    // SAFETY: with a null attribute pointer, size 0 and only the VERSION
    // flag, the kernel reads and writes no memory of ours; it returns the ABI
    // version, or -1 (ENOSYS: no landlock; EOPNOTSUPP: disabled at boot).
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0_usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (abi > 0).then(|| u8::try_from(abi).unwrap_or(u8::MAX))
}

/// Whether seccomp filters work here, and the actions the kernel offers.
fn seccomp() -> (bool, Vec<String>) {
    // SAFETY: PR_GET_SECCOMP takes no pointers; it returns the calling
    // thread's mode (0 none, 2 filtered: more filters can still be stacked),
    // or -1 with EINVAL on a kernel built without seccomp.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    let actions: Option<Vec<String>> =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
            .ok()
            .map(|text| text.split_whitespace().map(str::to_owned).collect());
    // The file appeared with Linux 4.14; an older kernel has filters (which
    // prctl does not tell apart) but not kill_process.
    let has = |action: &str| {
        actions
            .as_ref()
            .is_some_and(|a| a.iter().any(|x| x == action))
    };
    let filter = mode >= 0 && has("errno") && has("kill_process");
    (filter, actions.unwrap_or_default())
}

/// Whether `unshare(flags)` succeeds, tried in a forked child so that this
/// process keeps its namespaces.
///
/// The answer comes back through a pipe rather than the exit status, so a
/// subreaper loop elsewhere in the supervisor that reaps the child first
/// cannot change it.
fn can_unshare(flags: libc::c_int) -> bool {
    let Ok((reader, writer)) = pipe2(OFlag::O_CLOEXEC) else {
        return false;
    };
    // SAFETY: this process may be multi-threaded, so the child must only make
    // async-signal-safe calls: `unshare`, `write` and `_exit` are raw
    // syscalls, and the child never returns into code that could allocate or
    // take a lock another thread held at the fork.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: unshare takes flags only and affects only this child.
            let ok = unsafe { libc::unshare(flags) } == 0;
            let _ = write(&writer, &[u8::from(ok)]);
            // SAFETY: _exit ends the child at once, without running the
            // parent's atexit handlers or flushing its buffers.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(writer);
            let answer = read_byte(&reader) == Some(1);
            // ECHILD when something else reaped it: the answer stands.
            let _ = waitpid(child, None);
            answer
        }
        Err(_) => false,
    }
}

fn read_byte(fd: &OwnedFd) -> Option<u8> {
    let mut byte = [0_u8];
    loop {
        match read(fd, &mut byte) {
            Ok(1) => return Some(byte[0]),
            Err(Errno::EINTR) => {}
            // End of file: the child died before answering.
            _ => return None,
        }
    }
}

/// Whether the sysctls let unprivileged processes create user namespaces:
/// the kernel limit, Ubuntu's AppArmor restriction and Debian's older switch.
fn userns_sysctls_allow() -> bool {
    let read =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    read("/proc/sys/user/max_user_namespaces").is_some_and(|max| max > 0)
        && read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") != Some(1)
        && read("/proc/sys/kernel/unprivileged_userns_clone") != Some(0)
}

/// The engine's socket: `DOCKER_HOST` when it names a Unix socket (as the
/// Docker client and bollard read it), else the default path.
pub fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DOCKER_SOCKET))
}

/// Whether a connection to `socket` is accepted within
/// [`DOCKER_CONNECT_TIMEOUT`].
///
/// A Unix connect fails at once when nothing listens, but blocks while the
/// listener's backlog is full, so it runs on a helper thread; one stuck past
/// the timeout ends on its own when the connect resolves.
fn docker_reachable(socket: &Path) -> bool {
    if !socket.exists() {
        return false;
    }
    let (tx, rx) = mpsc::channel();
    let socket = socket.to_owned();
    let spawned = std::thread::Builder::new()
        .name("docker-probe".to_owned())
        .spawn(move || {
            let _ = tx.send(UnixStream::connect(&socket).is_ok());
        });
    spawned.is_ok() && rx.recv_timeout(DOCKER_CONNECT_TIMEOUT).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::sandbox::cgroup::CgroupVersion;

    fn bare_report() -> IsolationReport {
        IsolationReport {
            running_as_root: false,
            landlock_abi: None,
            seccomp_filter: false,
            seccomp_actions: Vec::new(),
            namespaces: BTreeMap::new(),
            unprivileged_userns: false,
            cgroup: CgroupSupport {
                version: CgroupVersion::None,
                memory: false,
                pids: false,
                cpu: false,
                hierarchies: BTreeMap::new(),
            },
            docker_reachable: false,
            missing: Vec::new(),
        }
    }

    #[test]
    fn a_bare_host_misses_every_strict_layer_in_order() {
        assert_eq!(missing_layers(&bare_report()), required_for_strict());
    }

    #[test]
    fn a_complete_host_misses_nothing() {
        let mut report = bare_report();
        report.landlock_abi = Some(1);
        report.seccomp_filter = true;
        report.namespaces = NAMESPACES
            .iter()
            .map(|&(name, _, _)| (name.to_owned(), true))
            .collect();
        report.unprivileged_userns = true;
        report.cgroup.memory = true;
        report.cgroup.pids = true;
        report.cgroup.cpu = true;
        assert_eq!(missing_layers(&report), Vec::<String>::new());
        assert!(report.jail_namespaces());

        // The cgroup namespace is reported but not required.
        report.namespaces.insert("cgroup".to_owned(), false);
        report.cgroup.cpu = false;
        report.namespaces.insert("pid".to_owned(), false);
        assert_eq!(missing_layers(&report), ["pid namespace", "cgroup cpu"]);
        // The jailer unshares them all at once: one missing, none built.
        assert!(!report.jail_namespaces());
    }

    #[test]
    fn report_serializes_with_every_field() {
        let json = serde_json::to_value(bare_report()).expect("serialize");
        for key in [
            "running_as_root",
            "landlock_abi",
            "seccomp_filter",
            "seccomp_actions",
            "namespaces",
            "unprivileged_userns",
            "cgroup",
            "docker_reachable",
            "missing",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(json["cgroup"]["version"], "none");
    }

    #[test]
    fn docker_probe_needs_a_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        assert!(!docker_reachable(&path));
        let listener = UnixListener::bind(&path).expect("bind");
        assert!(docker_reachable(&path));
        drop(listener);
        // The socket file stays behind, as after an engine crash.
        assert!(!docker_reachable(&path));
    }

    #[test]
    fn probe_matches_this_host() {
        let started = std::time::Instant::now();
        let report = probe();
        let took = started.elapsed();
        let json = serde_json::to_string_pretty(&report).expect("serialize");
        eprintln!("probe took {took:?}: {json}");
        assert_eq!(report.missing, missing_layers(&report));
        assert_eq!(report.namespaces.len(), NAMESPACES.len());
        // The project's test machines run as root and have every layer
        // (ISOLATION.md); elsewhere only the shape can be checked.
        if !report.running_as_root {
            eprintln!("not root: checking the report's shape only");
            return;
        }
        assert!(report.landlock_abi >= Some(1), "{:?}", report.landlock_abi);
        assert!(report.seccomp_filter);
        assert!(
            report.namespaces.values().all(|&ok| ok),
            "{:?}",
            report.namespaces
        );
        assert!(
            report.cgroup.memory && report.cgroup.pids,
            "{:?}",
            report.cgroup
        );
        assert!(report.missing.is_empty(), "{:?}", report.missing);
        assert!(report.strict_capable());
        assert!(report.jail_namespaces());
    }
}
