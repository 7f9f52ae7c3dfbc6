//! A real Prometheus (Debian's `prometheus`, which `./setup.sh test`
//! installs) scrapes a real `ward serve`, and its query API returns ward's
//! series with their labels (issue 13).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{Ward, bundled, digits_body, install};

/// The Prometheus server binary: on the PATH, or where Debian puts it.
fn prometheus_binary() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .expect("no prometheus binary: ./setup.sh test installs Debian's prometheus")
}

/// A free loopback port (Prometheus takes no port 0: it never says which it got).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus process, stopped (TERM, then KILL) when dropped.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n\
                 scrape_configs:\n  - job_name: ward\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let port = free_port();
        let mut cmd = Command::new(prometheus_binary());
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().expect("start prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn prometheus_scrapes_ward_and_queries_its_series_with_labels() {
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.1.0"), "digits");
        },
        &[],
    );
    ward.wait_state("digits", "1.1.0", "READY");
    const OK: u64 = 5;
    for _ in 0..OK {
        let (code, body) = ward.post(
            "/v2/models/digits/versions/1.1.0/infer",
            &digits_body(&[0.0; 64]),
        );
        assert_eq!(code, 200, "{body}");
    }
    // A wrong shape: a second outcome, INVALID_INPUT.
    let (code, body) = ward.post(
        "/v2/models/digits/versions/1.1.0/infer",
        &serde_json::json!({ "inputs": [
            { "name": "input", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0] }
        ]}),
    );
    assert_eq!(code, 400, "{body}");

    let dir = tempfile::tempdir().unwrap();
    let target = ward.url.strip_prefix("http://").unwrap();
    let mut prometheus = Prometheus::start(dir.path(), target);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let query = format!("{}/api/v1/query?query=ward_requests_total", prometheus.url);
    let deadline = Instant::now() + Duration::from_secs(60);
    let series = loop {
        if let Some(status) = prometheus.child.try_wait().unwrap() {
            panic!("prometheus exited ({status}):\n{}", prometheus.log());
        }
        // Connection refused until it listens; empty until the first scrape.
        let answer = agent.get(&query).call().ok().and_then(|mut r| {
            (r.status() == 200)
                .then(|| r.body_mut().read_to_string().ok())
                .flatten()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        });
        let result = answer
            .as_ref()
            .and_then(|a| a["data"]["result"].as_array())
            .cloned()
            .unwrap_or_default();
        if result.len() >= 2 {
            break result;
        }
        assert!(
            Instant::now() < deadline,
            "no ward_requests_total series in Prometheus within 60 s; last answer {answer:?}\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut seen: Vec<(String, String, String, String, String)> = series
        .iter()
        .map(|s| {
            let m = &s["metric"];
            let label = |k: &str| m[k].as_str().unwrap_or_else(|| panic!("{s}")).to_owned();
            assert_eq!(label("job"), "ward", "{s}");
            assert_eq!(label("instance"), target, "{s}");
            (
                label("__name__"),
                label("model"),
                label("version"),
                label("outcome"),
                s["value"][1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let want = |outcome: &str, n: u64| {
        (
            "ward_requests_total".to_owned(),
            "digits".to_owned(),
            "1.1.0".to_owned(),
            outcome.to_owned(),
            n.to_string(),
        )
    };
    assert_eq!(seen, vec![want("invalid_input", 1), want("ok", OK)]);
}
