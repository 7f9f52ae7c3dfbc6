//! A hostile native plugin helper for the denial tests: tries one escape named
//! on the command line and prints `{"outcome": "denied"|"allowed", "detail": ...}`.
//! It must only ever address 127.0.0.1.
//!
//!     it-hostile tcp PORT | udp PORT | read PATH | write PATH | kill PID |
//!                ptrace PID | mount | unshare | setns | forkbomb

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

fn report(allowed: bool, detail: String) -> ! {
    let outcome = if allowed { "allowed" } else { "denied" };
    println!("{{\"outcome\":\"{outcome}\",\"detail\":{:?}}}", detail);
    std::process::exit(0)
}

fn errno_result(r: i64) -> (bool, String) {
    if r >= 0 {
        (true, format!("returned {r}"))
    } else {
        (false, std::io::Error::last_os_error().to_string())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let (allowed, detail) = match arg(0).as_str() {
        "tcp" => {
            let addr = format!("127.0.0.1:{}", arg(1));
            match addr
                .parse()
                .map_err(std::io::Error::other)
                .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)))
            {
                Ok(_) => (true, "connected".to_owned()),
                Err(e) => (false, e.to_string()),
            }
        }
        "udp" => match UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.send_to(b"escape", format!("127.0.0.1:{}", arg(1))))
        {
            Ok(n) => (true, format!("sent {n} bytes")),
            Err(e) => (false, e.to_string()),
        },
        "read" => match std::fs::read(arg(1)) {
            Ok(b) => (true, format!("read {} bytes", b.len())),
            Err(e) => (false, e.to_string()),
        },
        "write" => match std::fs::File::create(arg(1)).and_then(|mut f| f.write_all(b"escape")) {
            Ok(()) => (true, "written".to_owned()),
            Err(e) => (false, e.to_string()),
        },
        "kill" => {
            let pid: i32 = arg(1).parse().unwrap_or(1);
            // SAFETY: plain syscall with integer arguments.
            errno_result(unsafe { nix::libc::kill(pid, nix::libc::SIGKILL) } as i64)
        }
        "ptrace" => {
            let pid: i64 = arg(1).parse().unwrap_or(1);
            // SAFETY: plain syscall with integer arguments.
            errno_result(unsafe {
                nix::libc::syscall(nix::libc::SYS_ptrace, nix::libc::PTRACE_ATTACH, pid, 0, 0)
            })
        }
        "mount" => {
            // SAFETY: plain syscall with valid C strings.
            errno_result(unsafe {
                nix::libc::mount(
                    c"none".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            } as i64)
        }
        "unshare" => {
            // SAFETY: plain syscall with integer arguments.
            errno_result(unsafe {
                nix::libc::unshare(nix::libc::CLONE_NEWUSER | nix::libc::CLONE_NEWNET)
            } as i64)
        }
        "setns" => match std::fs::File::open("/proc/1/ns/net") {
            Err(e) => (false, format!("open: {e}")),
            Ok(f) => {
                use std::os::fd::AsRawFd;
                // SAFETY: plain syscall on an fd we own.
                errno_result(unsafe { nix::libc::setns(f.as_raw_fd(), 0) } as i64)
            }
        },
        "forkbomb" => {
            // Bounded on purpose: stops at 1000 children or the first failure.
            let mut children = Vec::new();
            let mut failure = None;
            for _ in 0..1000 {
                match std::process::Command::new("/proc/self/exe")
                    .arg("sleep")
                    .spawn()
                {
                    Ok(c) => children.push(c),
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            let n = children.len();
            for mut c in children {
                let _ = c.kill();
                let _ = c.wait();
            }
            match failure {
                Some(e) => (false, format!("capped after {n} processes: {e}")),
                None => (true, format!("started {n} processes")),
            }
        }
        "sleep" => {
            std::thread::sleep(Duration::from_secs(30));
            (true, String::new())
        }
        other => (true, format!("unknown probe {other:?}")),
    };
    report(allowed, detail)
}
