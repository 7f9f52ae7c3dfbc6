//! The jailer: `ward-worker jail`, the step between the supervisor and an
//! untrusted plugin.
//!
//! The supervisor starts this binary with a [`JailSpec`] (JSON in
//! `WARD_JAIL_SPEC`). It runs single-threaded, before anything else in the
//! process, and applies the layers of ISOLATION.md C.1 in order:
//!
//! 1. `PR_SET_PDEATHSIG(SIGKILL)`, checked against the parent-exit race, and
//!    `setsid` (its own session and process group: one `killpg` reaches all);
//! 2. the cgroups the supervisor prepared (memory, pids, cpu): it moves itself in;
//! 3. connects to the supervisor's socket — before the filesystem disappears;
//! 4. new mount, net, ipc, uts and pid namespaces (and user, when not root);
//! 5. in the new pid namespace it forks and stays as **pid 1**, reaping
//!    orphans and passing on the worker's exit status;
//! 6. a minimal root: a tmpfs with read-only binds of the runtime and the model
//!    directory at their own paths, a size-capped private scratch at `/tmp`,
//!    a minimal `/dev`, a fresh `/proc`; `pivot_root`, the old root detached,
//!    the new root remounted read-only;
//! 7. the worker (pid 2): rlimits, every capability dropped and an
//!    unprivileged uid/gid, `no_new_privs`, landlock, every descriptor closed
//!    but the socket, a scrubbed environment, and seccomp last, right before
//!    `execve` of the worker itself (`ward-worker --fd N`).
//!
//! Where the host refuses namespaces (ward in an unprivileged container,
//! under Docker's default seccomp profile, say; the supervisor's probe
//! decides and says so in the spec), steps 4 to 6 are skipped unless
//! `strict`: the jailer becomes the worker itself, its scratch is the empty
//! directory the supervisor prepared (`HOME` and `TMPDIR` point there), and
//! step 7 applies as is: landlock then fences the file system (the runtime
//! and the model read-only, scratch read-write), TCP, signals and ptrace;
//! seccomp the rest. A separate uid only when started as root.
//!
//! Every step fails closed, except those marked best-effort in the spec; what
//! could not be applied is printed to stderr (the model's log) and was
//! already reported by the supervisor's startup probe.

pub mod landlock;
pub mod seccomp;

use std::ffi::CString;
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};
use ward_protocol::jail::{JailSpec, SPEC_ENV};

use crate::error_chain::error_chain;

/// Exit status when the jail could not be built (distinct from the worker's own).
pub const EXIT_JAIL_FAILED: i32 = 71;

fn fail(step: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("ward-jail: {step}: {e}");
    // SAFETY: _exit is always safe; nothing needs flushing (stderr is unbuffered).
    unsafe { nix::libc::_exit(EXIT_JAIL_FAILED) }
}

fn warn(step: &str, e: impl std::fmt::Display) {
    eprintln!("ward-jail: {step} (best effort, continuing): {e}");
}

/// Entry point of `ward-worker jail`. Never returns: it execs the worker, or
/// stays pid 1 of the sandbox and exits with the worker's status.
pub fn main() -> ! {
    let spec = std::env::var(SPEC_ENV).unwrap_or_else(|e| fail("reading the jail spec", e));
    let spec = JailSpec::from_hex(&spec).unwrap_or_else(|e| fail("reading the jail spec", e));
    let token = std::env::var("WARD_WORKER_TOKEN").unwrap_or_default();

    // 1. Die with the supervisor; and if it already died, do not run at all.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).unwrap_or_else(|e| fail("PR_SET_PDEATHSIG", e));
    if nix::unistd::getppid().as_raw() as u32 != spec.parent_pid {
        fail(
            "parent check",
            "the supervisor exited before the jail was built",
        );
    }
    nix::unistd::setsid().unwrap_or_else(|e| fail("setsid", e));

    // 2. Cgroups, prepared by the supervisor.
    let me = std::process::id().to_string();
    for procs in &spec.cgroup_procs {
        if let Err(e) = std::fs::write(procs, &me) {
            if spec.strict {
                fail(&format!("joining {procs}"), e);
            }
            warn(&format!("joining {procs}"), e);
        }
    }

    // 3. The socket, while the supervisor's filesystem is still visible.
    let socket = UnixStream::connect(&spec.socket)
        .unwrap_or_else(|e| fail("connecting to the supervisor", e));
    let socket_fd = socket.into_raw_fd();

    // Where the host refuses namespaces (the supervisor's probe found so:
    // ward in an unprivileged container), there is no private root: the
    // worker stays in this process, its scratch is the empty directory
    // prepared for the root, and the layers that need no privilege confine it.
    if !spec.namespaces {
        if spec.strict {
            fail(
                "namespaces",
                "refused on this host, and sandbox.strict is set",
            );
        }
        warn(
            "namespaces",
            "refused on this host: no private root, network, ipc or pid namespace; \
             rlimits, no_new_privs, landlock and seccomp confine the worker",
        );
        let root = Uid::effective().is_root();
        confine_and_exec(
            &spec,
            socket_fd,
            &token,
            root,
            Some(Path::new(&spec.new_root)),
        );
    }

    // 4. Namespaces. A user namespace only when not root (root needs none to
    //    drop privileges, and nesting one would re-grant capabilities inside).
    let root = Uid::effective().is_root();
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP;
    if !root {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let (outer_uid, outer_gid) = (Uid::current(), Gid::current());
    unshare(flags).unwrap_or_else(|e| fail("unshare", e));
    if !root {
        map_ids(outer_uid, outer_gid);
    }

    // 5. The first child is pid 1 of the new pid namespace.
    fork_child("pid namespace", "init", relay);

    // 6. The minimal root.
    if let Err(e) = nix::unistd::sethostname(&spec.hostname) {
        warn("sethostname", e);
    }
    build_root(&spec, root);

    // 7. The worker is pid 2; pid 1 stays to reap.
    fork_child("worker", "worker", init);
    confine_and_exec(&spec, socket_fd, &token, root, None)
}

/// Writes the user namespace's id maps: the outer user becomes root inside.
fn map_ids(uid: Uid, gid: Gid) {
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text)
            .unwrap_or_else(|e| fail(&format!("writing {file}"), e));
    };
    write("setgroups", "deny".to_owned());
    write("uid_map", format!("0 {uid} 1"));
    write("gid_map", format!("0 {gid} 1"));
}

/// Forks: the parent becomes `parent(child)` for good, and the child goes
/// on, dying with it. `what` names the fork and `role` the child in a failure.
fn fork_child(what: &str, role: &str, parent: fn(Pid) -> !) {
    // SAFETY: single-threaded process; the child continues with plain syscalls.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => parent(child),
        Ok(ForkResult::Child) => {}
        Err(e) => fail(&format!("fork ({what})"), e),
    }
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .unwrap_or_else(|e| fail(&format!("PR_SET_PDEATHSIG ({role})"), e));
}

/// The outer jailer: waits for pid 1 of the sandbox and exits the same way,
/// so the supervisor sees the worker's own status.
fn relay(child: Pid) -> ! {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => fail("waiting for the sandbox", e),
        }
    }
}

/// Pid 1 of the sandbox: reaps every orphan, exits with the worker's status
/// (signals as 128+n). When it exits the kernel kills whatever is left in
/// the namespace, so no plugin process outlives its worker.
fn init(worker: Pid) -> ! {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == worker => std::process::exit(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == worker => {
                std::process::exit(128 + sig as i32)
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(EXIT_JAIL_FAILED),
        }
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes())
        .unwrap_or_else(|_| fail("path", format!("{} contains NUL", p.display())))
}

/// `new_root` + an absolute path.
fn inside(new_root: &Path, p: &Path) -> PathBuf {
    new_root.join(p.strip_prefix("/").unwrap_or(p))
}

/// Creates the mount point for `src` inside the new root: a directory, or an
/// empty file for a file.
fn mount_point(target: &Path, src_is_dir: bool) {
    if src_is_dir {
        std::fs::create_dir_all(target)
            .unwrap_or_else(|e| fail(&format!("mkdir {}", target.display()), e));
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| fail(&format!("mkdir {}", parent.display()), e));
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target)
            .unwrap_or_else(|e| fail(&format!("creating {}", target.display()), e));
    }
}

/// Bind-mounts `src` read-only at the same path inside the new root.
fn bind_ro(new_root: &Path, src: &Path, exec: bool) {
    let Ok(meta) = std::fs::metadata(src) else {
        warn("bind", format!("{} does not exist; skipped", src.display()));
        return;
    };
    let target = inside(new_root, src);
    // A symlinked top-level directory (merged /usr: /bin -> usr/bin) is
    // recreated as the same symlink rather than bound twice.
    if let Ok(link) = std::fs::read_link(src)
        && src.parent() == Some(Path::new("/"))
        && link.is_relative()
    {
        let _ = std::os::unix::fs::symlink(&link, &target);
        return;
    }
    mount_point(&target, meta.is_dir());
    let none: Option<&str> = None;
    mount(
        Some(src),
        &target,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .unwrap_or_else(|e| fail(&format!("bind {}", src.display()), e));
    let mut ro = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    if !exec {
        ro |= MsFlags::MS_NOEXEC;
    }
    mount(none, &target, none, ro, none)
        .unwrap_or_else(|e| fail(&format!("read-only remount of {}", src.display()), e));
}

fn build_root(spec: &JailSpec, root: bool) {
    let none: Option<&str> = None;
    // Nothing mounted here propagates back to the host.
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .unwrap_or_else(|e| fail("making / private", e));
    let nr = Path::new(&spec.new_root);
    mount(
        Some("tmpfs"),
        nr,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=16m,mode=0755"),
    )
    .unwrap_or_else(|e| fail("mounting the new root", e));

    // Scratch first: runtime or model paths under /tmp are bound inside it.
    let scratch = nr.join("tmp");
    mount_point(&scratch, true);
    let owner = if root {
        format!(",uid={},gid={}", spec.uid, spec.gid)
    } else {
        String::new()
    };
    let opts = format!("size={}m,mode=0700{owner}", spec.scratch_mb.max(1));
    mount(
        Some("tmpfs"),
        &scratch,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .unwrap_or_else(|e| fail("mounting scratch", e));

    for p in &spec.read_exec {
        bind_ro(nr, Path::new(p), true);
    }
    for p in &spec.read_only {
        bind_ro(nr, Path::new(p), false);
    }
    // A minimal /dev.
    for dev in ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"] {
        let target = inside(nr, Path::new(dev));
        mount_point(&target, false);
        mount(Some(dev), &target, none, MsFlags::MS_BIND, none)
            .unwrap_or_else(|e| fail(&format!("bind {dev}"), e));
    }
    // A fresh /proc, showing only this pid namespace.
    let proc_dir = nr.join("proc");
    mount_point(&proc_dir, true);
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .unwrap_or_else(|e| fail("mounting /proc", e));

    let old = nr.join(".old-root");
    mount_point(&old, true);
    nix::unistd::pivot_root(nr, &old).unwrap_or_else(|e| fail("pivot_root", e));
    nix::unistd::chdir("/").unwrap_or_else(|e| fail("chdir /", e));
    umount2("/.old-root", MntFlags::MNT_DETACH)
        .unwrap_or_else(|e| fail("detaching the old root", e));
    let _ = std::fs::remove_dir("/.old-root");
    // Nothing outside scratch is writable.
    mount(
        none,
        "/",
        none,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        none,
    )
    .unwrap_or_else(|e| fail("read-only remount of /", e));
}

fn set_limit(resource: Resource, value: u64, what: &str) {
    setrlimit(resource, value, value).unwrap_or_else(|e| fail(&format!("setrlimit {what}"), e));
}

/// The number of processes and threads of this real uid (what
/// `RLIMIT_NPROC` counts).
fn uid_tasks() -> u64 {
    let uid = Uid::current().as_raw();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let field = |status: &str, name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|status| field(status, "Uid:") == Some(u64::from(uid)))
        .map(|status| field(&status, "Threads:").unwrap_or(1))
        .sum()
}

/// The last steps in the worker process, then `execve`. `shared` is the
/// scratch directory when there are no namespaces (the worker shares the
/// host's — or the container's — file system, and `/tmp`); `None` in the
/// private root, whose `/tmp` is the scratch.
fn confine_and_exec(
    spec: &JailSpec,
    socket_fd: i32,
    token: &str,
    root: bool,
    shared: Option<&Path>,
) -> ! {
    let l = spec.limits;
    set_limit(Resource::RLIMIT_AS, l.address_space_bytes, "AS");
    set_limit(Resource::RLIMIT_NOFILE, l.open_files, "NOFILE");
    // RLIMIT_NPROC counts every task of the real uid. Sharing its uid with
    // the supervisor and the other workers (no namespaces, not root), the
    // worker gets what they run now plus its own allowance.
    let processes = if shared.is_some() && !root {
        uid_tasks().saturating_add(l.processes)
    } else {
        l.processes
    };
    set_limit(Resource::RLIMIT_NPROC, processes, "NPROC");
    set_limit(Resource::RLIMIT_CORE, 0, "CORE");
    set_limit(Resource::RLIMIT_FSIZE, l.file_size_bytes, "FSIZE");
    set_limit(Resource::RLIMIT_CPU, l.cpu_seconds, "CPU");
    let scratch = shared.unwrap_or(Path::new("/tmp"));

    if root {
        if shared.is_some()
            && let Err(e) = nix::unistd::chown(
                scratch,
                Some(Uid::from_raw(spec.uid)),
                Some(Gid::from_raw(spec.gid)),
            )
        {
            warn("handing the scratch directory to the worker's uid", e);
        }
        drop_privileges(spec.uid, spec.gid);
        // A uid change clears the death signal.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .unwrap_or_else(|e| fail("PR_SET_PDEATHSIG (after setuid)", e));
    }
    nix::sys::prctl::set_no_new_privs().unwrap_or_else(|e| fail("PR_SET_NO_NEW_PRIVS", e));

    let rules = landlock::Rules {
        read_exec: spec.read_exec.iter().map(PathBuf::from).collect(),
        read_only: spec
            .read_only
            .iter()
            .map(PathBuf::from)
            .chain(["/proc", "/etc/ld.so.cache"].map(PathBuf::from))
            .collect(),
        read_write: std::iter::once(scratch.to_owned())
            .chain(["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"].map(PathBuf::from))
            .collect(),
        deny_tcp: true,
        scope_signals_and_abstract_sockets: true,
    };
    match landlock::restrict(&rules, spec.strict) {
        Ok(status) => {
            if !matches!(status.enforced, landlock::Enforcement::Full) {
                warn(
                    "landlock",
                    format!("{:?}: {}", status.enforced, status.detail),
                );
            }
        }
        Err(e) => fail("landlock", error_chain(&e)),
    }

    // Every descriptor but stdio and the socket closes at exec.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on fds.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            3u32,
            u32::MAX,
            nix::libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        fail("close_range", std::io::Error::last_os_error());
    }
    // SAFETY: fcntl on an fd we own; clears FD_CLOEXEC so the worker inherits it.
    if unsafe { nix::libc::fcntl(socket_fd, nix::libc::F_SETFD, 0) } != 0 {
        fail("keeping the socket open", std::io::Error::last_os_error());
    }

    let program = cstr(Path::new(&spec.worker));
    let mut args = vec![
        c"ward-worker".to_owned(),
        c"--fd".to_owned(),
        CString::new(socket_fd.to_string()).unwrap_or_default(),
    ];
    args.extend(
        spec.worker_args
            .iter()
            .filter_map(|a| CString::new(a.as_bytes()).ok()),
    );
    let scratch_text = scratch.to_string_lossy();
    let mut env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| match k.as_str() {
            // Without a private /tmp, home and temporary files go to scratch.
            "HOME" | "TMPDIR" if shared.is_some() => (k, &*scratch_text),
            _ => (k, v.as_str()),
        })
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    env.extend(CString::new(format!("WARD_WORKER_TOKEN={token}")).ok());

    // Seccomp last: it also constrains everything the steps above needed.
    if let Err(e) = seccomp::install(&seccomp::Policy::default()) {
        fail("seccomp", error_chain(&e));
    }
    let e = nix::unistd::execve(&program, &args, &env).unwrap_err();
    fail(&format!("execve {}", spec.worker), e)
}

/// Drops every capability for good and becomes the plugin's own user.
fn drop_privileges(uid: u32, gid: u32) {
    // The bounding set first (needs CAP_SETPCAP, which root still has).
    for cap in 0..=63 {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { nix::libc::prctl(nix::libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(nix::libc::EINVAL) {
            fail(
                "dropping the capability bounding set",
                std::io::Error::last_os_error(),
            );
        }
    }
    // SAFETY: clears the ambient set; integer arguments only.
    unsafe {
        nix::libc::prctl(
            nix::libc::PR_CAP_AMBIENT,
            nix::libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    nix::unistd::setgroups(&[]).unwrap_or_else(|e| fail("setgroups", e));
    let (g, u) = (Gid::from_raw(gid), Uid::from_raw(uid));
    nix::unistd::setresgid(g, g, g).unwrap_or_else(|e| fail("setresgid", e));
    // From root to a non-root uid, the permitted and effective sets are cleared.
    nix::unistd::setresuid(u, u, u).unwrap_or_else(|e| fail("setresuid", e));
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        fail("dropping privileges", "setuid(0) still works");
    }
}

/// `ward-worker --confine container`: the layers that need no privilege,
/// applied by a worker that Docker already locks down (container mode), so
/// that it and its plugin are denied what the native jail denies:
/// `no_new_privs`, landlock (the container's file system read-only but
/// `/tmp`, no TCP, signals and abstract sockets scoped to the worker's own
/// domain: not the container's init) and ward's seccomp filter (no `ptrace`
/// of the worker, no `unshare`, `mount`, non-Unix sockets, ...). Docker's
/// default seccomp profile allows `ptrace` of a process of the same uid.
pub fn confine_in_container() -> Result<(), String> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    let rules = landlock::Rules {
        read_exec: vec![PathBuf::from("/")],
        read_only: Vec::new(),
        read_write: [
            "/tmp",
            "/dev/null",
            "/dev/zero",
            "/dev/urandom",
            "/dev/random",
        ]
        .map(PathBuf::from)
        .to_vec(),
        deny_tcp: true,
        scope_signals_and_abstract_sockets: true,
    };
    match landlock::restrict(&rules, false) {
        Ok(status) if !matches!(status.enforced, landlock::Enforcement::Full) => warn(
            "landlock",
            format!("{:?}: {}", status.enforced, status.detail),
        ),
        Ok(_) => {}
        Err(e) => return Err(format!("landlock: {}", error_chain(&e))),
    }
    seccomp::install(&seccomp::Policy::default())
        .map_err(|e| format!("seccomp: {}", error_chain(&e)))
}

/// Whether argv asks for the jailer (`ward-worker jail`).
pub fn requested(args: &[String]) -> bool {
    args.first().map(String::as_str) == Some("jail")
}
