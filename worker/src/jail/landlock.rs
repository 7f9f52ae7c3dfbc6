//! Landlock: the jail's access-control fence, applied to the worker process
//! after the root is pivoted and privileges are dropped, before seccomp and
//! `execve` (ISOLATION.md C.1 step 9).
//!
//! The mount namespace already decides what the worker can *see*; landlock
//! decides what it may *do* with it, enforced by the kernel per process and
//! inherited by everything the worker forks or execs (a landlock domain can
//! only ever be narrowed). That is defence in depth: if a bind mount were
//! wrong — a host directory bound by mistake, a writable mount that should
//! have been read-only, a path left visible under `/proc` — reads, writes and
//! execs outside the listed paths still fail with `EACCES`. On top of the
//! filesystem it also:
//!
//! * denies every TCP `bind` and `connect` (ABI 4+), so even a missing network
//!   namespace leaves no TCP way out;
//! * scopes signals and abstract unix sockets (ABI 6+): the worker cannot
//!   signal, nor connect to an abstract socket of, any process outside its
//!   own landlock domain — the jailer's pid 1, the supervisor, the host;
//! * forbids `ptrace` of processes outside the domain (every ABI).
//!
//! What it does **not** cover, and which layer does:
//!
//! * UDP, raw, netlink and every other non-TCP socket: landlock only knows
//!   TCP ports. The empty network namespace and the seccomp `socket()` filter
//!   cover them.
//! * `connect` to a *pathname* unix socket (handled only from ABI 9, which is
//!   not pinned here): the mount namespace decides which socket files exist.
//! * descriptors opened before the restriction (the IPC socket, stdio): rights
//!   are checked at `open`, so the jailer closes every other descriptor.
//! * metadata and other syscalls: `stat`, `chmod`, `chown`, extended
//!   attributes, `utime`, file locks, `mmap(PROT_EXEC)` (hence `dlopen`), and
//!   the rest of the syscall surface — seccomp, the read-only mounts,
//!   dropped capabilities and an unprivileged uid cover those.
//!
//! Rights are those of a pinned ABI ([`PINNED_ABI`]), never "whatever the
//! kernel has": a newer kernel does not silently deny more (the crate's
//! compatibility contract). On an older kernel the best-effort mode enforces
//! what it can and says what is missing; strict mode refuses to run.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ::landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus,
    PathBeneath, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetError, RulesetStatus, Scope, make_bitflags,
};

/// The landlock ABI whose rights are handled: ABI 6 (Linux 6.12) has every
/// filesystem right this jail needs (`Refer` from 2, `Truncate` from 3,
/// `IoctlDev` from 5), TCP from 4 and the signal and abstract-socket scopes.
/// ABI 7 and 8 only add audit-log and thread-sync flags; ABI 9 adds
/// `ResolveUnix`, which would deny connecting to the supervisor's socket by
/// path unless it is listed — pin it only together with such a rule.
pub const PINNED_ABI: u8 = 6;
const PINNED: ABI = ABI::V6;

/// What the worker may touch. Paths that do not exist are skipped (and named
/// in [`Status::detail`]); everything not listed is denied.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Read and execute: runtime directories (`/usr`, `/lib`, Python
    /// prefixes), the worker binary, the ONNX Runtime library directory.
    pub read_exec: Vec<PathBuf>,
    /// Read only: the model directory, `/etc/ld.so.cache`, `/proc`, ...
    pub read_only: Vec<PathBuf>,
    /// Read, write, create, remove, rename, truncate, device ioctls: scratch,
    /// `/dev/null`, `/dev/urandom`, and GPU device nodes (`/dev/nvidia*`)
    /// for models that use CUDA, whose driver talks to them through ioctls.
    /// Not execute: a binary dropped in scratch cannot be `execve`d.
    pub read_write: Vec<PathBuf>,
    /// Handle TCP bind and connect with no port allowed: every TCP bind and
    /// connect fails with `EACCES`. UDP and other protocols are not covered by
    /// landlock; the network namespace and seccomp are.
    pub deny_tcp: bool,
    /// Scope signals and abstract unix sockets to the worker's own domain.
    pub scope_signals_and_abstract_sockets: bool,
}

/// How much of the requested restriction the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Every handled right, the network rule and the scopes.
    Full,
    /// Landlock is on, but the kernel lacks some of the pinned ABI's rights
    /// (named in [`Status::detail`]).
    Partial,
    /// The kernel has no landlock (or it is disabled): nothing is enforced.
    NotEnforced,
}

/// What [`restrict`] achieved, for the log and the health output.
#[derive(Debug, Clone)]
pub struct Status {
    /// The effective landlock ABI (the lower of the kernel's and the crate's),
    /// `None` without landlock.
    pub abi: Option<u8>,
    pub enforced: Enforcement,
    /// One line: the ABI, what is handled, rule counts, skipped paths and,
    /// when partial, what the kernel lacks.
    pub detail: String,
}

/// Errors of the landlock layer.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// Strict mode on a kernel without the pinned ABI.
    #[error(
        "strict mode needs landlock ABI {required}, the kernel has {}",
        kernel.map_or_else(|| "none".to_owned(), |v| v.to_string())
    )]
    Unsupported { kernel: Option<u8>, required: u8 },
    /// A listed path exists but cannot be opened for a rule.
    #[error("cannot open {} for a landlock rule", path.display())]
    Path {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot build the landlock ruleset")]
    Build(#[source] RulesetError),
    #[error("cannot enforce the landlock ruleset")]
    Enforce(#[source] RulesetError),
    /// Strict mode, and the kernel enforced less than everything.
    #[error("strict mode requires full landlock enforcement, got {enforced:?}: {detail}")]
    NotFullyEnforced {
        enforced: Enforcement,
        detail: String,
    },
}

/// Restricts the calling thread — in the single-threaded jailer, the worker
/// process — and everything it starts afterwards. Also sets `no_new_privs`.
///
/// Best effort unless `strict`: enforce what the kernel supports and report
/// it. With `strict`, anything short of [`Enforcement::Full`] is an error.
pub fn restrict(rules: &Rules, strict: bool) -> Result<Status, LandlockError> {
    prepare(rules, strict)?.enforce()
}

/// A ruleset built (paths opened, rules added) but not yet enforced.
///
/// Building needs to open files and allocate; enforcing is two syscalls. The
/// split lets a caller build while it can still see and open everything and
/// enforce at the last moment — or, in tests, build before `fork` and
/// enforce in the child.
#[derive(Debug)]
pub struct Prepared {
    ruleset: RulesetCreated,
    strict: bool,
    skipped: Vec<PathBuf>,
    summary: String,
}

/// Builds the ruleset for `rules` without enforcing it.
pub fn prepare(rules: &Rules, strict: bool) -> Result<Prepared, LandlockError> {
    if strict {
        let kernel = kernel_abi();
        if kernel.is_none_or(|v| v < PINNED_ABI) {
            return Err(LandlockError::Unsupported {
                kernel,
                required: PINNED_ABI,
            });
        }
    }
    let level = if strict {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };

    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(handled_fs())
        .map_err(LandlockError::Build)?;
    if rules.deny_tcp {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(PINNED))
            .map_err(LandlockError::Build)?;
    }
    if rules.scope_signals_and_abstract_sockets {
        ruleset = ruleset
            .scope(Scope::from_all(PINNED))
            .map_err(LandlockError::Build)?;
    }
    let mut created = ruleset.create().map_err(LandlockError::Build)?;

    let mut skipped = Vec::new();
    let mut added = [0usize; 3];
    let lists = [
        (&rules.read_exec, read_exec_access()),
        (&rules.read_only, read_only_access()),
        (&rules.read_write, read_write_access()),
    ];
    for ((paths, access), added) in lists.into_iter().zip(&mut added) {
        for path in paths {
            let Some(rule) = path_rule(path, access)? else {
                skipped.push(path.clone());
                continue;
            };
            created = created.add_rule(rule).map_err(LandlockError::Build)?;
            *added += 1;
        }
    }
    // TCP: handled above with no `NetPort` rule, so no port is allowed.

    let mut summary = format!(
        "handled: filesystem rights of ABI {PINNED_ABI}{}{}; rules: {} read-exec, {} read-only, {} read-write",
        if rules.deny_tcp {
            ", TCP bind+connect"
        } else {
            ""
        },
        if rules.scope_signals_and_abstract_sockets {
            ", signal and abstract-socket scopes"
        } else {
            ""
        },
        added[0],
        added[1],
        added[2],
    );
    if !skipped.is_empty() {
        summary.push_str("; skipped (missing):");
        for p in &skipped {
            let _ = write!(summary, " {}", p.display());
        }
    }

    Ok(Prepared {
        ruleset: created,
        strict,
        skipped,
        summary,
    })
}

impl Prepared {
    /// Listed paths that did not exist and got no rule.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }

    /// Enforces the ruleset on the calling thread (and what it starts).
    pub fn enforce(self) -> Result<Status, LandlockError> {
        let Prepared {
            ruleset,
            strict,
            summary,
            ..
        } = self;
        let restriction = ruleset.restrict_self().map_err(LandlockError::Enforce)?;
        let status = status_of(&restriction, &summary);
        if strict && status.enforced != Enforcement::Full {
            return Err(LandlockError::NotFullyEnforced {
                enforced: status.enforced,
                detail: status.detail,
            });
        }
        Ok(status)
    }
}

/// The running kernel's landlock ABI version, `None` when landlock is not
/// built in or is disabled. For probe reports; [`restrict`] does not need it.
pub fn kernel_abi() -> Option<u8> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with a null attribute, size 0 and the VERSION flag the syscall
    // reads no memory and creates no descriptor; it only returns the ABI
    // version or -1 (ENOSYS / EOPNOTSUPP).
    let v = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_landlock_create_ruleset,
            std::ptr::null::<nix::libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u8::try_from(v).ok().filter(|&v| v > 0)
}

/// Every filesystem right of the pinned ABI, so anything not granted by a
/// rule is denied. `Refer` (cross-directory rename/link), `Truncate` and
/// `IoctlDev` are among them: they are granted on `read_write` only.
fn handled_fs() -> BitFlags<AccessFs> {
    AccessFs::from_all(PINNED)
}

fn read_exec_access() -> BitFlags<AccessFs> {
    make_bitflags!(AccessFs::{ReadFile | ReadDir | Execute})
}

fn read_only_access() -> BitFlags<AccessFs> {
    make_bitflags!(AccessFs::{ReadFile | ReadDir})
}

/// Everything but `Execute` (writable and executable is how dropped payloads
/// run) and creating device nodes (which also needs `CAP_MKNOD`).
fn read_write_access() -> BitFlags<AccessFs> {
    handled_fs() & !make_bitflags!(AccessFs::{Execute | MakeChar | MakeBlock})
}

/// The rights that make sense on a non-directory; the kernel rejects a rule
/// on a file that grants directory rights (`EINVAL`), and in strict mode the
/// crate refuses it.
fn file_rights() -> BitFlags<AccessFs> {
    make_bitflags!(AccessFs::{ReadFile | WriteFile | Execute | Truncate | IoctlDev})
}

/// A rule for `path`, or `None` if it does not exist.
fn path_rule(
    path: &Path,
    access: BitFlags<AccessFs>,
) -> Result<Option<PathBeneath<std::fs::File>>, LandlockError> {
    // O_PATH: identifies the inode without read permission on it, and works
    // for device nodes without opening the device.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_PATH)
        .open(path)
    {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(source) => {
            return Err(LandlockError::Path {
                path: path.to_owned(),
                source,
            });
        }
    };
    let is_dir = file
        .metadata()
        .map_err(|source| LandlockError::Path {
            path: path.to_owned(),
            source,
        })?
        .is_dir();
    let access = if is_dir {
        access
    } else {
        access & file_rights()
    };
    Ok(Some(PathBeneath::new(file, access)))
}

fn status_of(r: &RestrictionStatus, summary: &str) -> Status {
    let (abi, kernel) = match r.landlock {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => (abi_number(effective_abi), kernel_abi),
        LandlockStatus::NotEnabled | LandlockStatus::NotImplemented => (None, None),
    };
    let enforced = match r.ruleset {
        RulesetStatus::FullyEnforced => Enforcement::Full,
        RulesetStatus::PartiallyEnforced => Enforcement::Partial,
        RulesetStatus::NotEnforced => Enforcement::NotEnforced,
    };
    let mut detail = match (r.landlock, abi) {
        (LandlockStatus::NotEnabled, _) => "landlock disabled in this kernel".to_owned(),
        (LandlockStatus::NotImplemented, _) => "landlock not built into this kernel".to_owned(),
        (_, Some(v)) => format!("landlock ABI {v}"),
        (_, None) => "landlock ABI unknown".to_owned(),
    };
    if let Some(k) = kernel {
        let _ = write!(detail, " (kernel ABI {k})");
    }
    let _ = write!(
        detail,
        ", {enforced:?}; {summary}; no_new_privs: {}",
        r.no_new_privs
    );
    if enforced == Enforcement::Partial
        && let Some(v) = abi
    {
        let _ = write!(detail, "; kernel lacks: {}", missing_below(v));
    }
    Status {
        abi,
        enforced,
        detail,
    }
}

/// What an ABI older than the pinned one does not enforce.
fn missing_below(abi: u8) -> String {
    [
        (2, "Refer (cross-directory rename/link always denied)"),
        (3, "Truncate"),
        (4, "TCP bind/connect"),
        (5, "IoctlDev"),
        (6, "signal and abstract-socket scopes"),
    ]
    .iter()
    .filter(|(since, _)| abi < *since)
    .map(|(_, what)| *what)
    .collect::<Vec<_>>()
    .join(", ")
}

fn abi_number(abi: ABI) -> Option<u8> {
    match abi {
        ABI::Unsupported => None,
        ABI::V1 => Some(1),
        ABI::V2 => Some(2),
        ABI::V3 => Some(3),
        ABI::V4 => Some(4),
        ABI::V5 => Some(5),
        ABI::V6 => Some(6),
        ABI::V7 => Some(7),
        ABI::V8 => Some(8),
        // Newer than this list: its Display is the number.
        other => other.to_string().parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    //! Each test forks: landlock restricts the calling thread for good, and
    //! the test harness must stay unrestricted. The ruleset is built in the
    //! parent; the child only enforces it, probes with plain syscalls and
    //! `_exit`s (or execs `/bin/true`), reporting through a pipe. glibc's
    //! `fork` leaves malloc usable in the child, and nothing in it takes
    //! another lock (no printing, no panicking).

    use super::*;
    use std::fs;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

    use nix::errno::Errno;
    use nix::libc::{EACCES, ENOTTY, EPERM, EXDEV};
    use nix::sys::signal::kill;
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, execv, fork, getpid, getppid};

    /// Marks the child's report: all checks passed, next is the final exec.
    const ALL_PASSED: u8 = 0xAA;
    /// Precedes `[check index, errno]` when a check failed.
    const FAILED: u8 = 0xFF;
    const EXIT_ENFORCE_FAILED: i32 = 90;
    const EXIT_EXEC_FAILED: i32 = 91;

    /// A probe run in the confined child: `Err(errno)` on failure, with 0
    /// meaning "succeeded but should have been denied".
    type Check<'a> = (&'a str, u8, &'a dyn Fn() -> Result<(), i32>);

    /// Leaves the forked child without running the harness's exit handlers.
    fn child_exit(code: i32) -> ! {
        // SAFETY: `_exit` ends the process at once; it is always safe to call.
        unsafe { nix::libc::_exit(code) }
    }

    /// `ioctl(TCGETS)` on a freshly opened `path`.
    fn tcgets(path: &str) -> io::Result<()> {
        let file = fs::File::open(path)?;
        let mut termios = std::mem::MaybeUninit::<nix::libc::termios>::uninit();
        // SAFETY: TCGETS writes at most one `termios` into the buffer given.
        let r =
            unsafe { nix::libc::ioctl(file.as_raw_fd(), nix::libc::TCGETS, termios.as_mut_ptr()) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn ok<T>(r: io::Result<T>) -> Result<(), i32> {
        r.map(drop).map_err(|e| e.raw_os_error().unwrap_or(-1))
    }

    fn denied<T>(r: io::Result<T>, errno: i32) -> Result<(), i32> {
        match r {
            Ok(_) => Err(0),
            Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
            Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
        }
    }

    fn nix_denied<T>(r: nix::Result<T>, errno: Errno) -> Result<(), i32> {
        match r {
            Ok(_) => Err(0),
            Err(e) if e == errno => Ok(()),
            Err(e) => Err(e as i32),
        }
    }

    /// Forks; the child enforces `prepared`, runs `checks` whose minimum ABI
    /// the kernel has, then execs `/bin/true`. Returns the child's report:
    /// `(effective abi, enforcement)`; panics with the failed check.
    fn run_confined(prepared: Prepared, checks: &[Check<'_>]) -> (Option<u8>, Enforcement) {
        let kernel = kernel_abi().unwrap_or(0);
        let (mut reader, mut writer) = io::pipe().expect("pipe");
        // SAFETY: the child only enforces the prebuilt ruleset, runs the
        // probes (plain syscalls through std), writes to the pipe and then
        // execs or `_exit`s; it never returns into the multi-threaded harness.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let status = match prepared.enforce() {
                    Ok(s) => s,
                    Err(_) => child_exit(EXIT_ENFORCE_FAILED),
                };
                let enforced = match status.enforced {
                    Enforcement::Full => 0,
                    Enforcement::Partial => 1,
                    Enforcement::NotEnforced => 2,
                };
                let _ = writer.write_all(&[status.abi.unwrap_or(0), enforced]);
                for (i, (_, min_abi, check)) in checks.iter().enumerate() {
                    if kernel < *min_abi {
                        continue;
                    }
                    if let Err(errno) = check() {
                        let index = u8::try_from(i).unwrap_or(u8::MAX);
                        let _ = writer.write_all(&[FAILED, index, errno as u8]);
                        child_exit(10 + i32::from(index));
                    }
                }
                let _ = writer.write_all(&[ALL_PASSED]);
                drop(writer);
                let _ = execv(c"/bin/true", &[c"true"]);
                child_exit(EXIT_EXEC_FAILED)
            }
            ForkResult::Parent { child } => {
                drop(prepared);
                drop(writer);
                let wait = waitpid(child, None).expect("waitpid");
                let mut report = Vec::new();
                reader.read_to_end(&mut report).expect("read report");
                if let [_, _, FAILED, index, errno] = report[..] {
                    let name = checks.get(usize::from(index)).map_or("?", |c| c.0);
                    panic!(
                        "check `{name}` failed: {}",
                        if errno == 0 {
                            "succeeded but should have been denied".to_owned()
                        } else {
                            format!("errno {errno} ({})", Errno::from_raw(i32::from(errno)))
                        }
                    );
                }
                assert_eq!(
                    wait,
                    WaitStatus::Exited(child, 0),
                    "child failed (90: enforce, 91: exec /bin/true); report {report:?}"
                );
                assert_eq!(report.len(), 3, "report {report:?}");
                assert_eq!(report[2], ALL_PASSED);
                let enforced = match report[1] {
                    0 => Enforcement::Full,
                    1 => Enforcement::Partial,
                    _ => Enforcement::NotEnforced,
                };
                ((report[0] != 0).then_some(report[0]), enforced)
            }
        }
    }

    fn expected_enforcement(kernel: Option<u8>) -> Enforcement {
        match kernel {
            None => Enforcement::NotEnforced,
            Some(v) if v < PINNED_ABI => Enforcement::Partial,
            Some(_) => Enforcement::Full,
        }
    }

    fn runtime_dirs() -> Vec<PathBuf> {
        ["/usr", "/lib", "/lib64", "/bin"]
            .map(PathBuf::from)
            .to_vec()
    }

    #[test]
    fn access_sets_cover_refer_truncate_ioctl() {
        let handled = handled_fs();
        for right in [AccessFs::Refer, AccessFs::Truncate, AccessFs::IoctlDev] {
            assert!(handled.contains(right), "{right:?} must be handled");
            assert!(
                read_write_access().contains(right),
                "{right:?} on read_write"
            );
            assert!(!read_only_access().contains(right));
            assert!(!read_exec_access().contains(right));
        }
        assert!(!read_write_access().contains(AccessFs::Execute));
        for access in [read_exec_access(), read_only_access(), read_write_access()] {
            assert!(handled.contains(access));
        }
    }

    #[test]
    fn missing_paths_are_skipped_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let rules = Rules {
            read_only: vec![missing.clone(), dir.path().to_owned()],
            read_write: vec![dir.path().join("also-missing/x")],
            ..Rules::default()
        };
        let prepared = prepare(&rules, false).expect("prepare");
        assert_eq!(
            prepared.skipped(),
            [missing.clone(), dir.path().join("also-missing/x")]
        );
        assert!(
            prepared
                .summary
                .contains(&format!("skipped (missing): {}", missing.display())),
            "{}",
            prepared.summary
        );
        // Only built, never enforced: this thread is not restricted.
        drop(prepared);
    }

    #[test]
    fn strict_mode_needs_the_pinned_abi() {
        let kernel = kernel_abi();
        let rules = Rules {
            read_exec: runtime_dirs(),
            // A file rule: strict mode must not choke on directory rights.
            read_only: vec!["/etc/ld.so.cache".into()],
            read_write: vec!["/dev/null".into()],
            deny_tcp: true,
            scope_signals_and_abstract_sockets: true,
        };
        match prepare(&rules, true) {
            Ok(prepared) => {
                assert!(kernel.is_some_and(|v| v >= PINNED_ABI), "kernel {kernel:?}");
                let (abi, enforced) = run_confined(prepared, &[]);
                assert_eq!(enforced, Enforcement::Full);
                assert!(abi.is_some_and(|v| v >= PINNED_ABI), "abi {abi:?}");
            }
            Err(LandlockError::Unsupported {
                kernel: k,
                required,
            }) => {
                assert_eq!((k, required), (kernel, PINNED_ABI));
                assert!(kernel.is_none_or(|v| v < PINNED_ABI));
            }
            Err(e) => panic!("strict prepare failed: {e:?}"),
        }
    }

    #[test]
    fn denies_everything_not_listed() {
        let kernel = kernel_abi();
        let ro = tempfile::tempdir().expect("tempdir");
        let rw = tempfile::tempdir().expect("tempdir");
        let ro_file = ro.path().join("weights.bin");
        fs::write(&ro_file, b"data").expect("write ro file");
        let rw_existing = rw.path().join("existing");
        fs::write(&rw_existing, b"old contents").expect("write rw file");
        // A copy of /bin/true in scratch: proves exec from a writable dir is
        // refused by landlock (it runs fine from the parent, so the mount is
        // not noexec).
        let dropped = rw.path().join("dropped");
        fs::copy("/bin/true", &dropped).expect("copy /bin/true");
        fs::set_permissions(&dropped, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(
            std::process::Command::new(&dropped)
                .status()
                .expect("run dropped")
                .success()
        );
        let unlisted = Path::new("/etc/hostname");
        assert!(
            fs::read(unlisted).is_ok(),
            "{} readable before",
            unlisted.display()
        );

        let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp listener");
        let tcp_addr = tcp.local_addr().expect("local addr");
        TcpStream::connect(tcp_addr).expect("listener reachable from the parent");
        let abstract_name = format!("ward-landlock-test-{}", std::process::id());
        let abstract_addr =
            SocketAddr::from_abstract_name(abstract_name.as_bytes()).expect("abstract addr");
        let _unix = UnixListener::bind_addr(&abstract_addr).expect("abstract listener");
        UnixStream::connect_addr(&abstract_addr).expect("abstract socket reachable from parent");

        let mut read_only = vec![
            ro.path().to_owned(),
            "/etc/ld.so.cache".into(),
            "/dev/urandom".into(),
        ];
        read_only.push(ro.path().join("not-there"));
        let rules = Rules {
            read_exec: runtime_dirs(),
            read_only,
            read_write: vec![rw.path().to_owned(), "/dev/null".into()],
            deny_tcp: true,
            scope_signals_and_abstract_sockets: true,
        };
        let prepared = prepare(&rules, false).expect("prepare");
        assert_eq!(prepared.skipped(), [ro.path().join("not-there")]);

        let rw_dir = rw.path();
        let checks: &[Check<'_>] = &[
            ("read in read_only", 1, &|| ok(fs::read(&ro_file))),
            ("list read_only", 1, &|| ok(fs::read_dir(ro.path()))),
            ("write in read_only", 1, &|| {
                denied(OpenOptions::new().write(true).open(&ro_file), EACCES)
            }),
            ("create in read_only", 1, &|| {
                denied(fs::File::create(ro.path().join("new")), EACCES)
            }),
            ("create in read_write", 1, &|| {
                ok(fs::write(rw_dir.join("new"), b"x"))
            }),
            ("truncate in read_write", 3, &|| {
                ok(fs::write(&rw_existing, b"new"))
            }),
            ("mkdir and rename across dirs in read_write", 2, &|| {
                ok(fs::create_dir(rw_dir.join("sub")))?;
                ok(fs::rename(rw_dir.join("new"), rw_dir.join("sub/new")))
            }),
            ("remove in read_write", 1, &|| {
                ok(fs::remove_file(rw_dir.join("sub/new")))?;
                ok(fs::remove_dir(rw_dir.join("sub")))
            }),
            ("truncate(2) in read_only", 3, &|| {
                nix_denied(nix::unistd::truncate(&ro_file, 0), Errno::EACCES)
            }),
            ("hard-link a read_only file into read_write", 2, &|| {
                // Landlock refuses a link that would grant more rights than
                // the source has (here: write through the new name), with
                // EXDEV so that tools fall back to copying.
                denied(fs::hard_link(&ro_file, rw_dir.join("linked")), EXDEV)
            }),
            ("device ioctl in read_write", 5, &|| {
                // /dev/null has no TCGETS: ENOTTY means the driver was reached.
                denied(tcgets("/dev/null"), ENOTTY)
            }),
            ("device ioctl in read_only", 5, &|| {
                denied(tcgets("/dev/urandom"), EACCES)
            }),
            ("write /dev/null (a file rule)", 1, &|| {
                ok(fs::write("/dev/null", b"x"))
            }),
            ("read unlisted /etc/hostname", 1, &|| {
                denied(fs::read(unlisted), EACCES)
            }),
            ("read unlisted /dev/zero", 1, &|| {
                denied(fs::File::open("/dev/zero"), EACCES)
            }),
            ("exec from read_write", 1, &|| {
                denied(std::process::Command::new(&dropped).status(), EACCES)
            }),
            ("tcp connect to the parent's listener", 4, &|| {
                denied(TcpStream::connect(tcp_addr), EACCES)
            }),
            ("tcp bind", 4, &|| {
                denied(TcpListener::bind("127.0.0.1:0"), EACCES)
            }),
            ("signal the parent", 6, &|| {
                nix_denied(kill(getppid(), None), Errno::EPERM)
            }),
            ("signal itself", 1, &|| {
                kill(getpid(), None).map_err(|e| e as i32)
            }),
            ("connect the parent's abstract socket", 6, &|| {
                denied(UnixStream::connect_addr(&abstract_addr), EPERM)
            }),
        ];
        let (abi, enforced) = run_confined(prepared, checks);
        eprintln!("landlock effective ABI {abi:?} (kernel {kernel:?}), {enforced:?}");
        assert_eq!(enforced, expected_enforcement(kernel));
        assert_eq!(abi, kernel.map(|k| k.min(9)));
        // The parent is unaffected.
        assert!(fs::read(unlisted).is_ok());
        TcpStream::connect(tcp_addr).expect("listener still reachable from the parent");
    }
}
