//! Capability registration over TLS, end to end: the real `ward serve`
//! posts to an `https://` backend on loopback. The test makes a throwaway
//! CA and a certificate for 127.0.0.1 with the system's `openssl`, runs
//! `openssl s_server` as the backend (it prints what it receives and sends
//! what it is given), and trusts the CA through `WARD_REGISTRATION_CA_FILE`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{Ward, bundled, digits_body, install};

/// A CA, and a certificate for 127.0.0.1 that it signed, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        const EC: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(
            dir.path(),
            &format!("req -x509 {EC} -days 1 -subj /CN=ward-test-CA -keyout ca.key -out ca.pem"),
        );
        openssl(
            dir.path(),
            &format!("req {EC} -subj /CN=127.0.0.1 -keyout leaf.key -out leaf.csr"),
        );
        std::fs::write(
            dir.path().join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            dir.path(),
            "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
             -extfile leaf.ext -out leaf.pem",
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Runs `openssl` with whitespace-separated `args` in `dir`.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("these tests need the openssl command line tool");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl s_server` on an ephemeral port of 127.0.0.1's wildcard.
struct TlsBackend {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<Vec<u8>>>,
    port: u16,
}

impl TlsBackend {
    fn start(pki: &Pki) -> TlsBackend {
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "0", "-cert"])
            .arg(pki.path("leaf.pem"))
            .arg("-key")
            .arg(pki.path("leaf.key"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("these tests need the openssl command line tool");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let mut backend = TlsBackend {
            child,
            stdin,
            out,
            port: 0,
        };
        // It prints `ACCEPT [::]:PORT` once it listens.
        backend.port = backend.wait_for("the listening port", |out| {
            let text = String::from_utf8_lossy(out);
            let line = text.lines().find(|l| l.starts_with("ACCEPT "))?;
            line.rsplit(':').next()?.trim().parse().ok()
        });
        backend
    }

    fn url(&self) -> String {
        format!(
            "https://127.0.0.1:{}/api/internal/runtime/register",
            self.port
        )
    }

    /// Polls what the server printed until `parse` finds something.
    fn wait_for<T>(&self, what: &str, parse: impl Fn(&[u8]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = parse(&self.out.lock().unwrap()) {
                return found;
            }
            assert!(Instant::now() < deadline, "s_server never showed {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first request: its head (lines, names in lower case) and JSON body.
    fn first_request(&self) -> (Vec<String>, Value) {
        self.wait_for("a complete request", |out| {
            let start = out.windows(5).position(|w| w == b"POST ")?;
            let out = &out[start..];
            let head_end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
            let head: Vec<String> = String::from_utf8_lossy(&out[..head_end])
                .split("\r\n")
                .map(|l| match l.split_once(':') {
                    Some((name, value)) => format!("{}:{value}", name.to_ascii_lowercase()),
                    None => l.to_owned(),
                })
                .collect();
            let len: usize = head
                .iter()
                .find_map(|l| l.strip_prefix("content-length:"))?
                .trim()
                .parse()
                .ok()?;
            let body = out.get(head_end + 4..head_end + 4 + len)?;
            Some((head, serde_json::from_slice(body).ok()?))
        })
    }

    fn answer(&mut self, response: &str) {
        self.stdin.write_all(response.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `/metrics` until it holds `line`.
fn wait_metric(ward: &Ward, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, metrics) = ward.get("/metrics");
        assert_eq!(code, 200);
        if metrics.as_str().is_some_and(|m| m.contains(line)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics never showed {line}; ward said:\n{}",
            ward.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn registration_reaches_an_https_backend_trusted_through_config() {
    let pki = Pki::new();
    let mut backend = TlsBackend::start(&pki);
    let token = pki.path("token");
    std::fs::write(&token, "registration-secret-0042\n").unwrap();
    let ca = pki.path("ca.pem");
    let ward = Ward::start(
        |_| {},
        &[
            ("WARD_REGISTRATION_URL", &backend.url()),
            ("WARD_REGISTRATION_CA_FILE", ca.to_str().unwrap()),
            ("WARD_REGISTRATION_TOKEN_FILE", token.to_str().unwrap()),
            ("WARD_RUNTIME_ID", "ward-over-tls"),
            ("WARD_HEARTBEAT_MS", "60000"),
        ],
    );
    let (head, declaration) = backend.first_request();
    assert_eq!(head[0], "POST /api/internal/runtime/register HTTP/1.1");
    assert!(
        head.iter()
            .any(|l| l == "authorization: Bearer registration-secret-0042"),
        "{head:?}"
    );
    assert!(head.iter().any(|l| l == "content-type: application/json"));
    assert_eq!(declaration["runtime_id"], "ward-over-tls");
    assert!(declaration["hardware"]["cpu_cores"].as_u64().unwrap() >= 1);
    assert_eq!(declaration["health_summary"]["total_models"], 0);

    backend.answer("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
    wait_metric(&ward, r#"ward_registration_attempts_total{result="ok"} 1"#);
    assert!(
        !ward.stderr().contains("registration-secret-0042"),
        "the token reached the log"
    );
}

#[test]
fn an_untrusted_https_backend_is_a_counted_failure_and_serving_goes_on() {
    let pki = Pki::new();
    let backend = TlsBackend::start(&pki);
    // No CA file: the system's roots do not know the test CA.
    let ward = Ward::start(
        |root| drop(install(root, &bundled("digits/1.0.0"), "digits")),
        &[
            ("WARD_REGISTRATION_URL", &backend.url()),
            ("WARD_HEARTBEAT_MS", "200"),
        ],
    );
    ward.wait_state("digits", "1.0.0", "READY");
    wait_metric(&ward, r#"ward_registration_attempts_total{result="error"}"#);
    let log = ward.stderr();
    assert!(
        log.contains("capability registration failed") && log.contains("is not trusted"),
        "{log}"
    );
    assert_eq!(
        ward.post(
            "/v2/models/digits/versions/1.0.0/infer",
            &digits_body(&[0.0; 64])
        )
        .0,
        200
    );
}

#[test]
fn a_missing_ca_file_stops_start_up_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_it-ward"))
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("WARD_BIND", "127.0.0.1:0")
        .env("WARD_GRPC_BIND", "")
        .env("WARD_MODEL_ROOT", dir.path())
        .env("WARD_RUN_DIR", dir.path().join("run"))
        .env("WARD_WORKER_BINARY", env!("CARGO_BIN_EXE_it-ward-worker"))
        .env("WARD_REGISTRATION_URL", "https://127.0.0.1:9/register")
        .env("WARD_REGISTRATION_CA_FILE", &missing)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("registration.ca_file") && err.contains("no-such-ca.pem"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening"),
        "ward served without its CA file"
    );
}
