//! The seccomp-BPF filter: the jailer's last layer, installed right before
//! `execve` of the worker (after `no_new_privs`), so that it binds the worker
//! and everything it starts — Python plugins, native helpers — for good: a
//! filter survives `execve` and `fork` and can never be removed, only stacked.
//!
//! # Why a deny-list now
//!
//! The filter allows every system call except a list of known escape and abuse
//! routes: debugging or reading other processes, rebuilding the filesystem
//! view or leaving the namespaces, kernel keyrings, `bpf`/`perf`/`io_uring`/
//! `userfaultfd` (the kernel's most exploited surfaces), files by handle (the
//! "shocker" escape), host administration, network sockets, terminal input
//! injection, and — killing the process rather than failing the call — kernel
//! modules and kexec. Everything else in the jail (namespaces, landlock,
//! rlimits, no capabilities) already confines what the allowed calls can
//! reach; this layer narrows the kernel attack surface below them.
//!
//! A deny-list is where to start because the plugins are arbitrary Python with
//! native extensions (numpy, onnxruntime, whatever a plugin vendors): what
//! they call depends on the library versions, the glibc and the kernel, and an
//! allow-list that misses one rare call kills a plugin in production on a path
//! no test exercised. A deny-list cannot break a plugin that does not need a
//! denied call, and every denied call either needs privileges the jail already
//! dropped or has no business in model inference.
//!
//! # What an allow-list would need
//!
//! An allow-list (default `KILL_PROCESS`, the Firecracker/nsjail style) needs
//! the calls *recorded per plugin type* — the ONNX runner, the Python runner
//! with its pinned packages — by running each type's whole test suite (load,
//! infer, every error path, shutdown, GPU and CPU) under a `SECCOMP_RET_LOG`
//! or `SECCOMP_RET_TRACE` filter, or under `strace -f -c`, on every supported
//! architecture and glibc; then argument rules for the calls that are only
//! safe with some arguments (`socket`, `ioctl`, `clone`, `mmap`/`mprotect`
//! with `PROT_EXEC`, `prctl`, `fcntl`); and a CI job that re-records when a
//! dependency moves, since a new glibc or onnxruntime may use a new call
//! (`clone3`, `rseq` and `futex_waitv` all arrived that way). Plugins that
//! vendor their own native code would need their own recording, or stay on
//! this deny-list.
//!
//! # How it is built
//!
//! [`seccompiler`] (Firecracker's compiler) gives each filter one action on a
//! match, so the policy is three stacked filters, each starting with the
//! architecture check (a foreign `AUDIT_ARCH`, such as i386 `int 0x80` on
//! x86_64, is `KILL_PROCESS`), each allowing by default and each matching a
//! disjoint set of calls (the kernel runs them all and takes the most severe
//! verdict, so disjoint sets keep every errno as written):
//!
//! * `EPERM` (seccompiler): the deny-list, plus argument rules for `socket`,
//!   `socketpair`, `ioctl` and `clone` (see `arg_rules`);
//! * `KILL_PROCESS` (seccompiler): kernel modules and kexec, so the attempt is
//!   a visible SIGSYS (exit status 159) the supervisor reports as a seccomp
//!   violation — `EPERM` instead when [`Policy::kill_list_enabled`] is off;
//! * `ENOSYS` (hand-written BPF, since seccompiler matches syscall numbers
//!   only by equality): `clone3`, whose flags live in memory the filter cannot
//!   read — glibc then falls back to `clone`, whose flags it can — and, on
//!   x86_64, every x32 call (`nr >= __X32_SYSCALL_BIT`): x32 calls carry the
//!   x86_64 `AUDIT_ARCH`, so without this an x32-enabled kernel would let a
//!   plugin reach every denied call under its x32 number.
//!
//! Argument checks compare 32 bits (`Dword`) because the kernel reads these
//! arguments as `int`/`unsigned int` (or, for `clone`, their lower 32 bits): a
//! 64-bit comparison could be dodged by setting bits the kernel ignores.

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch, sock_filter,
};

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;

#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;
/// `AUDIT_ARCH_AARCH64`: `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the seccomp filter is written for x86_64 and aarch64 only");

/// Calls that fail with `EPERM` whatever their arguments.
const DENIED: &[libc::c_long] = &[
    // Reading, writing or steering another process.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    libc::SYS_process_madvise,
    // Rebuilding the filesystem view or leaving the namespaces, through the
    // old mount call or the new mount API.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    // Kernel keyrings (shared across the host, not namespaced).
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    // The kernel surfaces with the longest exploit record.
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_perf_event_open,
    libc::SYS_bpf,
    // Files by handle, past every path check (the "shocker" escape), and
    // watching file access.
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_fanotify_init,
    // Administering the host.
    libc::SYS_acct,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_lookup_dcookie,
];

/// Calls that kill the whole process (SIGSYS) when [`Policy::kill_list_enabled`].
const KILL_LIST: &[libc::c_long] = &[
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
];

/// Namespace flags that `clone` may not carry. (`CLONE_NEWTIME` is not among
/// them: in `clone`'s flags its bit is part of the exit signal; it only exists
/// for `clone3` and `unshare`, both denied.)
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// Terminal ioctls that push input into a terminal (another process's shell,
/// when the terminal is shared) or drive the virtual console.
const DENIED_IOCTLS: [libc::Ioctl; 2] = [libc::TIOCSTI, libc::TIOCLINUX];

/// Calls that fail with `ENOSYS`, as on a kernel that lacks them.
const NOT_IMPLEMENTED: &[libc::c_long] = &[libc::SYS_clone3];

/// On x86_64, syscall numbers at or above this are the x32 ABI.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What the filter does beyond its fixed deny-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Kernel module and kexec calls kill the process with SIGSYS (status
    /// 159), so the attempt is seen and classified as a seccomp violation.
    /// When off they fail with `EPERM` like the rest of the deny-list.
    pub kill_list_enabled: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            kill_list_enabled: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("compiling the seccomp filter")]
    Compile(#[source] BackendError),
    #[error("installing the seccomp filter")]
    Install(#[source] seccompiler::Error),
}

/// A compiled policy, ready to install.
///
/// Compiling allocates; [`Filter::install`] does not, so a caller that must not
/// allocate at install time (a child after `fork` in a multi-threaded process)
/// compiles first.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Installed in order; the kernel runs every one on each call.
    programs: Vec<BpfProgram>,
}

impl Filter {
    /// Compiles `policy` for the architecture this binary was built for.
    pub fn compile(policy: &Policy) -> Result<Self, SeccompError> {
        let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&nr| (nr, Vec::new())).collect();
        denied.extend(arg_rules()?);
        let killed: BTreeMap<i64, Vec<SeccompRule>> =
            KILL_LIST.iter().map(|&nr| (nr, Vec::new())).collect();

        let eperm = SeccompAction::Errno(libc::EPERM as u32);
        let mut programs = Vec::with_capacity(3);
        if policy.kill_list_enabled {
            programs.push(compile(denied, eperm)?);
            programs.push(compile(killed, SeccompAction::KillProcess)?);
        } else {
            denied.extend(killed);
            programs.push(compile(denied, eperm)?);
        }
        programs.push(enosys_program());
        Ok(Self { programs })
    }

    /// Installs the filter on every thread of the calling process (TSYNC),
    /// setting `no_new_privs` first (seccompiler always does; it is a no-op
    /// when the jailer already has).
    ///
    /// Fails closed: on an error some of the stacked filters may already be
    /// in place, and the caller must not go on to `execve`.
    pub fn install(&self) -> Result<(), SeccompError> {
        for program in &self.programs {
            seccompiler::apply_filter_all_threads(program).map_err(SeccompError::Install)?;
        }
        Ok(())
    }
}

/// Compiles `policy` and installs it on every thread of the calling process.
pub fn install(policy: &Policy) -> Result<(), SeccompError> {
    Filter::compile(policy)?.install()
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    on_match: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, on_match, ARCH)
        .map_err(SeccompError::Compile)?;
    BpfProgram::try_from(filter).map_err(SeccompError::Compile)
}

/// The calls denied (`EPERM`) only with some arguments. A syscall's rules
/// match when any one of them does.
///
/// * `socket`, `socketpair`: any domain but `AF_UNIX` — the worker's socket to
///   the supervisor, `socketpair` and multiprocessing need it; IP, IPv6,
///   netlink and packet sockets have no use in a jail without a network.
/// * `ioctl`: `TIOCSTI` and `TIOCLINUX` (terminal input injection).
/// * `clone`: any namespace flag. seccompiler's `MaskedEq(m)` with value `v`
///   matches `arg & m == v & m`, so "flag set" is `MaskedEq(flag)` with value
///   `flag`, one rule per flag; `fork`, `vfork` and thread creation carry none.
fn arg_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let arg32 = |index: u8, op: SeccompCmpOp, value: u64| -> Result<SeccompRule, SeccompError> {
        let condition = SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)
            .map_err(SeccompError::Compile)?;
        SeccompRule::new(vec![condition]).map_err(SeccompError::Compile)
    };
    let not_unix = || arg32(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64).map(|rule| vec![rule]);
    let ioctls = DENIED_IOCTLS
        .iter()
        .map(|&request| arg32(1, SeccompCmpOp::Eq, ioctl_request(request)))
        .collect::<Result<Vec<_>, _>>()?;
    let clone = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| arg32(0, SeccompCmpOp::MaskedEq(flag as u64), flag as u64))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BTreeMap::from([
        (libc::SYS_socket, not_unix()?),
        (libc::SYS_socketpair, not_unix()?),
        (libc::SYS_ioctl, ioctls),
        (libc::SYS_clone, clone),
    ]))
}

#[allow(
    clippy::unnecessary_cast,
    reason = "libc::Ioctl is c_ulong on glibc but c_int on musl"
)]
fn ioctl_request(request: libc::Ioctl) -> u64 {
    request as u64
}

/// The `ENOSYS` filter, by hand: seccompiler cannot express the x32 range.
fn enosys_program() -> BpfProgram {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let stmt = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt, jf| sock_filter { code, jt, jf, k };
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

    let mut program = vec![
        stmt(
            LD_W_ABS,
            std::mem::offset_of!(libc::seccomp_data, arch) as u32,
        ),
        jump(JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(
            LD_W_ABS,
            std::mem::offset_of!(libc::seccomp_data, nr) as u32,
        ),
    ];
    #[cfg(target_arch = "x86_64")]
    {
        const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
        program.extend([jump(JGE_K, X32_SYSCALL_BIT, 0, 1), stmt(RET_K, enosys)]);
    }
    for &nr in NOT_IMPLEMENTED {
        program.extend([jump(JEQ_K, nr as u32, 0, 1), stmt(RET_K, enosys)]);
    }
    program.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
    program
}

#[cfg(test)]
mod tests {
    //! Two kinds of test. The first run the compiled BPF in a small
    //! interpreter, which can try every listed call and argument trick without
    //! making the call. The second fork a child that installs the filter for
    //! real and makes the call; the child only makes raw system calls before
    //! `_exit`, because the test harness is multi-threaded, and reports the
    //! errno (0 for success) as its exit code.

    use std::ffi::CString;
    use std::path::PathBuf;

    use nix::sys::signal::Signal;
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};

    use super::*;

    // ---- the BPF interpreter -------------------------------------------------

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;

    #[derive(Debug, PartialEq, Eq)]
    enum Verdict {
        Allow,
        Errno(i32),
        KillProcess,
        Other(u32),
    }

    /// One system call as the filter sees it (`struct seccomp_data`).
    fn call(nr: libc::c_long, args: &[u64]) -> [u8; 64] {
        call_as(AUDIT_ARCH, nr as u32, args)
    }

    fn call_as(arch: u32, nr: u32, args: &[u64]) -> [u8; 64] {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        data
    }

    /// Runs one classic-BPF program, for the instructions our filters use.
    fn run(program: &[sock_filter], data: &[u8; 64]) -> u32 {
        const LD_W_ABS: u16 = 0x20;
        const ALU_AND_K: u16 = 0x54;
        const JA: u16 = 0x05;
        const JEQ_K: u16 = 0x15;
        const JGT_K: u16 = 0x25;
        const JGE_K: u16 = 0x35;
        const RET_K: u16 = 0x06;
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = &program[pc];
            let jump = |taken: bool| usize::from(if taken { ins.jt } else { ins.jf });
            pc += 1;
            match ins.code {
                LD_W_ABS => {
                    let at = ins.k as usize;
                    acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                }
                ALU_AND_K => acc &= ins.k,
                JA => pc += ins.k as usize,
                JEQ_K => pc += jump(acc == ins.k),
                JGT_K => pc += jump(acc > ins.k),
                JGE_K => pc += jump(acc >= ins.k),
                RET_K => return ins.k,
                code => panic!("instruction {code:#x} not interpreted"),
            }
        }
    }

    /// The kernel's verdict over stacked filters: the most severe action wins
    /// (compared as `s32`, so KILL_PROCESS is the most severe), the newest
    /// filter on a tie.
    fn verdict(filter: &Filter, data: &[u8; 64]) -> Verdict {
        let severity = |ret: u32| (ret & libc::SECCOMP_RET_ACTION_FULL) as i32;
        let ret = filter.programs.iter().rev().map(|p| run(p, data)).fold(
            libc::SECCOMP_RET_ALLOW,
            |best, ret| {
                if severity(ret) < severity(best) {
                    ret
                } else {
                    best
                }
            },
        );
        match ret & libc::SECCOMP_RET_ACTION_FULL {
            libc::SECCOMP_RET_ALLOW => Verdict::Allow,
            libc::SECCOMP_RET_ERRNO => Verdict::Errno((ret & libc::SECCOMP_RET_DATA) as i32),
            libc::SECCOMP_RET_KILL_PROCESS => Verdict::KillProcess,
            _ => Verdict::Other(ret),
        }
    }

    fn strict() -> Filter {
        Filter::compile(&Policy::default()).unwrap()
    }

    #[test]
    fn every_denied_call_fails_with_eperm() {
        let filter = strict();
        for &nr in DENIED {
            assert_eq!(
                verdict(&filter, &call(nr, &[])),
                Verdict::Errno(libc::EPERM),
                "syscall {nr}"
            );
        }
    }

    #[test]
    fn the_kill_list_kills_or_fails_as_the_policy_says() {
        let strict = strict();
        let lenient = Filter::compile(&Policy {
            kill_list_enabled: false,
        })
        .unwrap();
        for &nr in KILL_LIST {
            assert_eq!(
                verdict(&strict, &call(nr, &[])),
                Verdict::KillProcess,
                "syscall {nr}"
            );
            assert_eq!(
                verdict(&lenient, &call(nr, &[])),
                Verdict::Errno(libc::EPERM),
                "syscall {nr}"
            );
        }
    }

    #[test]
    fn ordinary_calls_are_allowed() {
        let filter = strict();
        let fork_flags =
            (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        let thread_flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        let vfork_flags = (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64;
        let unix = libc::AF_UNIX as u64;
        for (nr, args) in [
            (libc::SYS_read, vec![]),
            (libc::SYS_write, vec![]),
            (libc::SYS_openat, vec![]),
            (libc::SYS_mmap, vec![]),
            (libc::SYS_futex, vec![]),
            (libc::SYS_execve, vec![]),
            (libc::SYS_exit_group, vec![]),
            (libc::SYS_seccomp, vec![]),
            (libc::SYS_clone, vec![fork_flags]),
            (libc::SYS_clone, vec![thread_flags]),
            (libc::SYS_clone, vec![vfork_flags]),
            (libc::SYS_socket, vec![unix, libc::SOCK_STREAM as u64]),
            (libc::SYS_socketpair, vec![unix, libc::SOCK_STREAM as u64]),
            (libc::SYS_ioctl, vec![0, ioctl_request(libc::TCGETS)]),
            (libc::SYS_ioctl, vec![0, ioctl_request(libc::FIONBIO)]),
        ] {
            assert_eq!(
                verdict(&filter, &call(nr, &args)),
                Verdict::Allow,
                "syscall {nr} {args:x?}"
            );
        }
    }

    #[test]
    fn sockets_other_than_unix_fail_whatever_the_upper_bits() {
        let filter = strict();
        for nr in [libc::SYS_socket, libc::SYS_socketpair] {
            for domain in [
                libc::AF_INET,
                libc::AF_INET6,
                libc::AF_NETLINK,
                libc::AF_PACKET,
                libc::AF_VSOCK,
            ] {
                for high in [0, 0xffff_ffff_0000_0000] {
                    let data = call(nr, &[high | domain as u64]);
                    assert_eq!(
                        verdict(&filter, &data),
                        Verdict::Errno(libc::EPERM),
                        "{nr} domain {domain}"
                    );
                }
            }
            // The kernel reads the domain as an int: this is AF_UNIX to it too.
            let unix_with_high_bits = call(nr, &[0x1_0000_0000 | libc::AF_UNIX as u64]);
            assert_eq!(verdict(&filter, &unix_with_high_bits), Verdict::Allow);
        }
    }

    #[test]
    fn terminal_injection_fails_whatever_the_upper_bits() {
        let filter = strict();
        for request in DENIED_IOCTLS {
            for high in [0, 0x1_0000_0000, 0xffff_ffff_0000_0000] {
                let data = call(libc::SYS_ioctl, &[0, high | ioctl_request(request)]);
                assert_eq!(
                    verdict(&filter, &data),
                    Verdict::Errno(libc::EPERM),
                    "request {request:#x}"
                );
            }
        }
    }

    #[test]
    fn clone_with_any_namespace_flag_fails() {
        let filter = strict();
        for flag in NAMESPACE_FLAGS {
            for extra in [
                0,
                libc::SIGCHLD as u64,
                0xffff_ffff_0000_0000 | libc::CLONE_VM as u64,
            ] {
                let data = call(libc::SYS_clone, &[extra | flag as u64]);
                assert_eq!(
                    verdict(&filter, &data),
                    Verdict::Errno(libc::EPERM),
                    "flag {flag:#x}"
                );
            }
        }
        let all = NAMESPACE_FLAGS.iter().fold(0, |acc, &f| acc | f) as u64;
        assert_eq!(
            verdict(&filter, &call(libc::SYS_clone, &[all])),
            Verdict::Errno(libc::EPERM)
        );
    }

    #[test]
    fn clone3_is_not_implemented() {
        for filter in [
            strict(),
            Filter::compile(&Policy {
                kill_list_enabled: false,
            })
            .unwrap(),
        ] {
            assert_eq!(
                verdict(&filter, &call(libc::SYS_clone3, &[])),
                Verdict::Errno(libc::ENOSYS)
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_are_not_implemented() {
        let filter = strict();
        for &nr in [
            libc::SYS_getpid,
            libc::SYS_ptrace,
            libc::SYS_socket,
            libc::SYS_init_module,
        ]
        .iter()
        {
            let data = call_as(
                AUDIT_ARCH,
                X32_SYSCALL_BIT | nr as u32,
                &[libc::AF_INET as u64],
            );
            assert_eq!(
                verdict(&filter, &data),
                Verdict::Errno(libc::ENOSYS),
                "x32 syscall {nr}"
            );
        }
        // x32's own numbers for some calls sit above 512.
        let data = call_as(AUDIT_ARCH, X32_SYSCALL_BIT | 521, &[]);
        assert_eq!(verdict(&filter, &data), Verdict::Errno(libc::ENOSYS));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_foreign_architecture_is_killed() {
        for filter in [
            strict(),
            Filter::compile(&Policy {
                kill_list_enabled: false,
            })
            .unwrap(),
        ] {
            for nr in [0, 20, 1000] {
                let data = call_as(AUDIT_ARCH_I386, nr, &[]);
                assert_eq!(
                    verdict(&filter, &data),
                    Verdict::KillProcess,
                    "i386 syscall {nr}"
                );
            }
        }
    }

    // ---- the filter installed for real ---------------------------------------

    /// How a child ended.
    #[derive(Debug, PartialEq, Eq)]
    enum Ended {
        Exit(i32),
        Signal(Signal),
    }

    /// The child could not set `no_new_privs` or install the filter.
    const SETUP_FAILED: i32 = 250;

    /// Forks; the child installs `filter` (when given), runs `probe` and exits
    /// with what it returns.
    fn in_child(filter: Option<&Filter>, probe: impl FnOnce() -> i32) -> Ended {
        // SAFETY: the child makes only raw system calls (no allocation, no
        // locks another thread could have held at the fork) and leaves
        // through `_exit`, as `probe`s are written to.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: setrlimit reads the struct we pass; a SIGSYS should
                // leave no core file behind.
                unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
                let ready = filter.is_none_or(|f| {
                    nix::sys::prctl::set_no_new_privs().is_ok() && f.install().is_ok()
                });
                let code = if ready { probe() } else { SETUP_FAILED };
                // SAFETY: _exit ends the child without running the parent's
                // atexit handlers or destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).expect("waitpid") {
                WaitStatus::Exited(_, code) => Ended::Exit(code),
                WaitStatus::Signaled(_, signal, _) => Ended::Signal(signal),
                other => panic!("unexpected wait status {other:?}"),
            },
        }
    }

    fn filtered(probe: impl FnOnce() -> i32) -> Ended {
        in_child(Some(&strict()), probe)
    }

    /// 0 when a raw call succeeded, else its errno.
    fn errno_of(ret: libc::c_long) -> i32 {
        if ret < 0 {
            nix::errno::Errno::last_raw()
        } else {
            0
        }
    }

    /// Opens a socket in `domain` and closes it again.
    fn socket_in(domain: libc::c_int) -> i32 {
        // SAFETY: socket takes integers only.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM, 0) };
        if fd < 0 {
            return nix::errno::Errno::last_raw();
        }
        // SAFETY: closes the descriptor just opened.
        unsafe { libc::close(fd) };
        0
    }

    const EPERM: Ended = Ended::Exit(libc::EPERM);

    #[test]
    fn inet_sockets_fail_with_eperm() {
        assert_eq!(filtered(|| socket_in(libc::AF_INET)), EPERM);
        assert_eq!(filtered(|| socket_in(libc::AF_INET6)), EPERM);
        assert_eq!(filtered(|| socket_in(libc::AF_NETLINK)), EPERM);
    }

    #[test]
    fn unix_sockets_work() {
        assert_eq!(filtered(|| socket_in(libc::AF_UNIX)), Ended::Exit(0));
        let pair = || {
            let mut fds = [0; 2];
            // SAFETY: socketpair writes two descriptors into `fds`.
            let r =
                unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
            errno_of(r.into())
        };
        assert_eq!(filtered(pair), Ended::Exit(0));
    }

    #[test]
    fn ptrace_traceme_fails_with_eperm() {
        // SAFETY: PTRACE_TRACEME takes no pointers.
        let probe = || errno_of(unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) });
        assert_eq!(filtered(probe), EPERM);
    }

    #[test]
    fn unshare_fails_with_eperm() {
        // SAFETY: unshare takes flags only.
        let probe = || errno_of(unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into());
        assert_eq!(filtered(probe), EPERM);
    }

    #[test]
    fn mount_fails_with_eperm() {
        let probe = || {
            // SAFETY: NUL-terminated literals; without the filter, root gets
            // ENOENT for the missing target and nothing is mounted.
            let r = unsafe {
                libc::mount(
                    c"none".as_ptr(),
                    c"/nonexistent-ward-seccomp-test".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            errno_of(r.into())
        };
        assert_eq!(filtered(probe), EPERM);
    }

    /// Waits for `pid`; 0 when it exited with `code`.
    fn reap(pid: libc::pid_t, code: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waitpid writes the status into `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r != pid {
            return 201;
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == code {
            0
        } else {
            202
        }
    }

    #[test]
    fn fork_still_works() {
        let probe = || {
            // SAFETY: glibc's fork (a `clone` without namespace flags); the
            // grandchild only calls _exit.
            match unsafe { libc::fork() } {
                -1 => nix::errno::Errno::last_raw(),
                // SAFETY: _exit in the grandchild.
                0 => unsafe { libc::_exit(42) },
                pid => reap(pid, 42),
            }
        };
        assert_eq!(filtered(probe), Ended::Exit(0));
    }

    extern "C" fn thread_body(_: *mut libc::c_void) -> *mut libc::c_void {
        std::ptr::null_mut()
    }

    #[test]
    fn threads_still_start() {
        // glibc's pthread_create tries clone3 first and falls back to clone
        // on ENOSYS; this is that fallback. (Thread creation after fork is safe
        // in glibc, which resets its stack-cache and loader locks in the child.)
        let probe = || {
            let mut thread: libc::pthread_t = 0;
            // SAFETY: default attributes; `thread_body` touches nothing.
            let r = unsafe {
                libc::pthread_create(
                    &mut thread,
                    std::ptr::null(),
                    thread_body,
                    std::ptr::null_mut(),
                )
            };
            if r != 0 {
                return r;
            }
            // SAFETY: joins the thread just created.
            unsafe { libc::pthread_join(thread, std::ptr::null_mut()) }
        };
        assert_eq!(filtered(probe), Ended::Exit(0));
    }

    #[test]
    fn clone_into_a_new_namespace_fails_with_eperm() {
        let probe = || {
            for (i, flag) in NAMESPACE_FLAGS.into_iter().enumerate() {
                let flags = (flag | libc::SIGCHLD) as libc::c_ulong;
                // SAFETY: a fork-like raw clone (no new stack); should it
                // succeed, the grandchild only calls _exit.
                let r = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
                match r {
                    // SAFETY: _exit in the grandchild.
                    0 => unsafe { libc::_exit(0) },
                    -1 if nix::errno::Errno::last_raw() == libc::EPERM => {}
                    -1 => return 100 + i as i32,
                    pid => {
                        reap(pid as libc::pid_t, 0);
                        return 110 + i as i32;
                    }
                }
            }
            0
        };
        assert_eq!(filtered(probe), Ended::Exit(0));
    }

    #[test]
    fn clone3_fails_with_enosys() {
        // Without the filter a NULL, zero-sized clone_args is EINVAL (and
        // forks nothing).
        // SAFETY: the kernel rejects the arguments before reading memory.
        let probe =
            || errno_of(unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) });
        assert_eq!(in_child(None, probe), Ended::Exit(libc::EINVAL));
        assert_eq!(filtered(probe), Ended::Exit(libc::ENOSYS));
    }

    #[test]
    fn tiocsti_fails_with_eperm() {
        // On fd -1, so that a broken filter gives EBADF rather than typing
        // into the terminal running the tests.
        let probe = |request: u64| {
            move || {
                let byte = b'x';
                // SAFETY: ioctl on an invalid fd; the kernel reads at most one byte.
                errno_of(unsafe { libc::syscall(libc::SYS_ioctl, -1, request, &byte) })
            }
        };
        let tiocsti = ioctl_request(libc::TIOCSTI);
        assert_eq!(in_child(None, probe(tiocsti)), Ended::Exit(libc::EBADF));
        assert_eq!(filtered(probe(tiocsti)), EPERM);
        assert_eq!(filtered(probe(0x1_0000_0000 | tiocsti)), EPERM);
        assert_eq!(filtered(probe(ioctl_request(libc::TIOCLINUX))), EPERM);
    }

    fn init_module() -> i32 {
        // SAFETY: a NULL image of length 0; the kernel copies nothing.
        errno_of(unsafe {
            libc::syscall(
                libc::SYS_init_module,
                std::ptr::null::<u8>(),
                0usize,
                c"".as_ptr(),
            )
        })
    }

    #[test]
    fn init_module_kills_with_sigsys() {
        assert_eq!(filtered(init_module), Ended::Signal(Signal::SIGSYS));
        let lenient = Filter::compile(&Policy {
            kill_list_enabled: false,
        })
        .unwrap();
        assert_eq!(in_child(Some(&lenient), init_module), EPERM);
    }

    #[cfg(target_arch = "x86_64")]
    fn ia32_getpid() -> i32 {
        let ret: i64;
        // SAFETY: `int 0x80` with eax = 20 is i386 getpid: it reads no memory
        // and returns in eax; r8–r11 are declared clobbered for old kernels.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("rax") 20i64 => ret,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack),
            );
        }
        if ret > 0 { 0 } else { 1 }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn an_i386_system_call_kills_with_sigsys() {
        match in_child(None, ia32_getpid) {
            Ended::Exit(0) => {}
            other => {
                // A kernel without IA32 emulation cannot make the call at all.
                eprintln!(
                    "int 0x80 unavailable here ({other:?}); the interpreter test covers the arch check"
                );
                return;
            }
        }
        assert_eq!(filtered(ia32_getpid), Ended::Signal(Signal::SIGSYS));
    }

    /// Runs `program` with `args` under the filter: exec is allowed, and what
    /// it starts inherits the filter.
    fn exec_filtered(program: &str, args: &[&str]) -> Ended {
        let argv: Vec<CString> = std::iter::once(program)
            .chain(args.iter().copied())
            .map(|a| CString::new(a).unwrap())
            .collect();
        let mut pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        pointers.push(std::ptr::null());
        filtered(|| {
            // SAFETY: `argv` and `pointers` were built before the fork and
            // outlive the call; the array is NULL-terminated.
            unsafe { libc::execv(pointers[0], pointers.as_ptr()) };
            127
        })
    }

    #[test]
    fn a_shell_runs_and_its_children_inherit_the_filter() {
        // grep is the shell's child: its own /proc/self/status shows the filter.
        let script = r#"grep -q '^Seccomp:[[:space:]]*2$' /proc/self/status && exit 7; exit 1"#;
        assert_eq!(exec_filtered("/bin/sh", &["-c", script]), Ended::Exit(7));
    }

    /// The Python the plugins run on: `WARD_PYTHON`, else the repository's
    /// `.venv`, else `python3` on the usual paths.
    fn python() -> PathBuf {
        let repo_venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        std::env::var_os("WARD_PYTHON")
            .map(PathBuf::from)
            .into_iter()
            .chain([
                repo_venv,
                "/usr/bin/python3".into(),
                "/usr/local/bin/python3".into(),
            ])
            .find(|p| p.exists())
            .expect("no Python found: run ./setup.sh or set WARD_PYTHON")
    }

    #[test]
    fn python_runs_threads_and_subprocesses_but_opens_no_inet_socket() {
        let script = r#"
import errno, socket, subprocess, sys, threading
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sys.exit(10)
except PermissionError as e:
    if e.errno != errno.EPERM:
        sys.exit(11)
a, b = socket.socketpair()
a.sendall(b"x")
if b.recv(1) != b"x":
    sys.exit(12)
t = threading.Thread(target=lambda: None)
t.start()
t.join()
child = "import socket\ntry:\n    socket.socket(socket.AF_INET6)\nexcept PermissionError:\n    raise SystemExit(5)\n"
if subprocess.run([sys.executable, "-c", child]).returncode != 5:
    sys.exit(13)
sys.exit(0)
"#;
        let python = python();
        assert_eq!(
            exec_filtered(python.to_str().unwrap(), &["-c", script]),
            Ended::Exit(0)
        );
    }
}
