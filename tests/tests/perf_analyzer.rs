//! Triton's own load tool, `perf_analyzer` (installed by `./setup.sh test`),
//! unmodified against a real `ward serve`, over HTTP (JSON and binary tensor
//! data) and gRPC: a short, bounded run each, which must finish without an
//! error and be counted by ward as answered requests. The numbers are the
//! benchmark's business (tests/bench/grpc.sh), not this test's.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::{Ward, bundled, grpc_addr, install, metric};

/// Runs perf_analyzer with `args` against digits 1.0.0 (zeros as input),
/// killed after two minutes; returns its output, asserting it succeeded.
fn perf_analyzer(args: &[&str]) -> String {
    let (binary, libs) = ward_tests::perf_analyzer();
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("out.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(binary)
        .args(["-m", "digits", "-x", "1.0.0", "--input-data", "zero"])
        .args(["--shape", "input:1,64", "--concurrency-range", "2"])
        // Three windows of 500 ms, at most five tries to be stable.
        .args([
            "--measurement-mode",
            "time_windows",
            "-p",
            "500",
            "-s",
            "1000",
            "-r",
            "5",
        ])
        .args(args)
        .env("LD_LIBRARY_PATH", libs)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "perf_analyzer {args:?} still ran after 2 minutes:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "perf_analyzer {args:?} failed:\n{text}");
    text
}

/// The throughput line perf_analyzer prints for the concurrency it ran.
fn throughput(text: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("Concurrency: 2, throughput: ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no throughput line:\n{text}"))
}

fn answered(ward: &Ward) -> f64 {
    metric(
        ward,
        r#"ward_requests_total{model="digits",version="1.0.0",outcome="ok"}"#,
    )
    .unwrap_or(0.0)
}

#[test]
fn perf_analyzer_measures_ward_over_http_and_grpc() {
    let ward = Ward::start(
        |root| drop(install(root, &bundled("digits/1.0.0"), "digits")),
        &[],
    );
    ward.wait_state("digits", "1.0.0", "READY");
    let http = ward.url.strip_prefix("http://").unwrap().to_owned();
    let runs: [(&str, Vec<&str>); 3] = [
        ("grpc", vec!["-i", "grpc", "-u", grpc_addr(&ward)]),
        ("http binary", vec!["-i", "http", "-u", &http]),
        (
            "http json",
            vec![
                "-i",
                "http",
                "-u",
                &http,
                "--input-tensor-format",
                "json",
                "--output-tensor-format",
                "json",
            ],
        ),
    ];
    for (what, args) in runs {
        let before = answered(&ward);
        let text = perf_analyzer(&args);
        let per_second = throughput(&text);
        assert!(per_second > 0.0, "{what}: no throughput:\n{text}");
        let counted = answered(&ward) - before;
        // Every request perf_analyzer measured was one ward answered (it
        // also sends some it does not count, warming up and between windows).
        assert!(counted >= 3.0, "{what}: ward answered {counted}:\n{text}");
        eprintln!("{what}: {per_second} infer/s, ward answered {counted}");
    }
}
