//! Command line of `ward-worker`.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use ward_protocol::{FrameLimit, ProtocolError};

use crate::error_chain::error_chain;
use crate::execute::Exit;
use crate::server::{self, Server};

const USAGE: &str = "\
usage: ward-worker (--socket PATH | --fd N) [--max-frame BYTES] [--spin-us MICROSECONDS]
                   [--confine container]
The one-time handshake token is read from WARD_WORKER_TOKEN. --spin-us bounds how
long the worker polls for the next request before sleeping (default 50, 0 = never).";

/// Exit status when the backend died under a request (e.g. the plugin process
/// exited): distinct from a crash of the worker itself.
pub const EXIT_BACKEND_DIED: u8 = 70;

/// Exit status when the plugin process was killed by seccomp (SIGSYS): 128 +
/// SIGSYS, as a shell reports a death by that signal, so that the
/// supervisor (through the jail's pid 1, which relays statuses that way)
/// classifies it as the seccomp violation it was, not as a crash.
pub const EXIT_PLUGIN_SECCOMP: u8 = 128 + nix::libc::SIGSYS as u8;

/// The exit status for a backend that died.
fn backend_exit_code(fatal: &crate::backend::Fatal) -> u8 {
    if fatal.signal == Some(nix::libc::SIGSYS) {
        EXIT_PLUGIN_SECCOMP
    } else {
        EXIT_BACKEND_DIED
    }
}

enum Target {
    Socket(String),
    Fd(i32),
}

/// Default of `--spin-us`.
pub const DEFAULT_SPIN_US: u64 = 50;

struct Options {
    target: Target,
    limit: FrameLimit,
    spin: Duration,
    /// `--confine container`: apply the privilege-free layers first.
    confine: bool,
}

fn parse(args: &[String]) -> Option<Options> {
    let mut target = None;
    let mut limit = FrameLimit::DEFAULT;
    let mut spin = Duration::from_micros(DEFAULT_SPIN_US);
    let mut confine = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_str() {
            "--socket" => target = Some(Target::Socket(value.clone())),
            "--fd" => target = Some(Target::Fd(value.parse().ok().filter(|fd| *fd > 2)?)),
            "--max-frame" => limit = FrameLimit::new(value.parse().ok()?),
            "--spin-us" => {
                spin = Duration::from_micros(value.parse().ok().filter(|us| *us <= 10_000)?);
            }
            "--confine" if value == "container" => confine = true,
            _ => return None,
        }
    }
    Some(Options {
        target: target?,
        limit,
        spin,
        confine,
    })
}

pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The jailer must run before anything else (it needs a single-threaded process).
    if crate::jail::requested(&args) {
        crate::jail::main();
    }
    let Some(Options {
        target,
        limit,
        spin,
        confine,
    }) = parse(&args)
    else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if confine && let Err(e) = crate::jail::confine_in_container() {
        eprintln!("ward-worker: confining the container worker: {e}");
        return ExitCode::from(crate::jail::EXIT_JAIL_FAILED as u8);
    }
    // The token must not leak into the plugin's environment.
    let token = std::env::var("WARD_WORKER_TOKEN").unwrap_or_default();
    // SAFETY: single-threaded at this point; nothing else reads the environment concurrently.
    unsafe { std::env::remove_var("WARD_WORKER_TOKEN") };
    let result = match target {
        Target::Socket(path) => server::serve_socket(&path, token, limit, spin),
        Target::Fd(fd) => {
            // SAFETY: the supervisor passes us this descriptor and nothing else owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // It arrived without close-on-exec (that is how it got here); set it
            // again, or every plugin process would inherit the supervisor's socket.
            if let Err(e) = nix::fcntl::fcntl(
                &owned,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            ) {
                eprintln!("ward-worker: cannot set close-on-exec on the socket: {e}");
                return ExitCode::FAILURE;
            }
            let stream = UnixStream::from(owned);
            stream
                .try_clone()
                .map_err(|e| Exit::Protocol(ProtocolError::from(e)))
                .and_then(|writer| Server::connect(stream, writer, token, limit, spin))
                .and_then(Server::run)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit::Backend(why)) => {
            eprintln!("ward-worker: {why}");
            ExitCode::from(backend_exit_code(&why))
        }
        Err(e) => {
            eprintln!("ward-worker: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
