//! The `ward` command line as an operator meets it: `ward serve` started with
//! flags instead of variables, beside stray `WARD_*` variables (issue 11), the
//! help of every subcommand, and `ward validate --format json`.

use std::process::{Command, Output};

use serde_json::Value;

use crate::server::{Ward, bundled, digits_body, install};
use crate::support::{onnxruntime, python, repo};

fn ward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_it-ward"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run ward")
}

/// `WARD_URL` (the CLI's own variable) and an unrelated `WARD_SOMETHING` no
/// longer stop the server; the unknown one is named in a warning. The flags
/// beat the `WARD_MODEL_ROOT` and `WARD_BIND` exported beside them.
#[test]
fn serve_takes_flags_and_warns_about_unknown_variables() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("models");
    install(&root, &bundled("digits/1.0.0"), "digits");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_it-ward"));
    cmd.arg("serve")
        .arg("--model-root")
        .arg(&root)
        .args(["--bind", "127.0.0.1:0", "--log-dir"])
        .arg(dir.path().join("logs"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WARD_URL", "http://127.0.0.1:1")
        .env("WARD_SOMETHING", "1")
        // Losers to the flags: an empty root, and a port nothing else uses.
        .env("WARD_MODEL_ROOT", dir.path().join("not-the-root"))
        .env("WARD_BIND", "127.0.0.1:1")
        .env("WARD_GRPC_BIND", "127.0.0.1:0")
        .env("WARD_RUN_DIR", dir.path().join("run"))
        .env("WARD_WORKER_BINARY", env!("CARGO_BIN_EXE_it-ward-worker"))
        .env("WARD_ONNXRUNTIME_LIBRARY", onnxruntime())
        .env("WARD_PYTHON", python())
        .env("WARD_DOCKER_ENABLED", "false")
        .env("WARD_LOG", "info");
    let logs = dir.path().join("logs/digits");
    let ward = Ward::spawn(cmd, dir);
    assert!(
        !ward.url.ends_with(":1"),
        "WARD_BIND beat --bind: {}",
        ward.url
    );
    // READY here means --model-root beat WARD_MODEL_ROOT.
    ward.wait_state("digits", "1.0.0", "READY");
    let (code, answer) = ward.post(
        "/v2/models/digits/versions/1.0.0/infer",
        &digits_body(&[0.0; 64]),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["model_version"], "1.0.0", "{answer}");

    let log = ward.stderr();
    let warning = log
        .lines()
        .find(|l| l.contains("WARD_SOMETHING"))
        .unwrap_or_else(|| panic!("no warning names WARD_SOMETHING:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.contains("did you mean WARD_"),
        "{warning}"
    );
    assert!(
        !log.contains("WARD_URL"),
        "WARD_URL was warned about:\n{log}"
    );
    assert!(logs.is_dir(), "--log-dir was not used");
}

#[test]
fn every_subcommand_has_help_naming_its_flags() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["serve", "--help"],
            &[
                "--config",
                "--model-root",
                "--bind",
                "--log-dir",
                "WARD_MODEL_ROOT",
                "WARD_BIND",
                "WARD_LOG_DIR",
            ],
        ),
        (&["validate", "--help"], &["--format", "json", "PATH"]),
        (&["models", "--help"], &["--url", "WARD_URL"]),
        (&["infer", "--help"], &["--json", "--image", "--url"]),
        (&["image", "build", "--help"], &["--config"]),
        (
            &["help"],
            &["serve", "validate", "models", "infer", "image"],
        ),
    ];
    for (args, needles) in cases {
        let out = ward(args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "ward {args:?}:\n{text}");
        for needle in *needles {
            assert!(
                text.contains(needle),
                "ward {args:?} lacks {needle}:\n{text}"
            );
        }
    }
    assert_eq!(ward(&["serve", "--bind", "nowhere"]).status.code(), Some(2));
    assert_eq!(ward(&["serve", "--port", "1"]).status.code(), Some(2));
}

#[test]
fn validate_json_lists_every_problem_with_its_path_and_kind() {
    let out = ward(&["validate", "--format", "json", "tests/fixtures/broken_root"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(
        (report["valid"].as_u64(), report["total"].as_u64()),
        (Some(0), Some(4))
    );
    let versions = report["versions"].as_array().unwrap();
    let typos = versions
        .iter()
        .find(|v| v["name"] == "typos/1.0.0")
        .unwrap_or_else(|| panic!("no typos/1.0.0 in {report:#}"));
    assert_eq!(typos["valid"], false);
    let problems: Vec<(&str, &str)> = typos["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["kind"].as_str().unwrap()))
        .collect();
    for expected in [
        ("input.type", "invalid_value"),
        ("output.schema.confidence.type", "invalid_value"),
        ("timeout", "unknown_field"),
        ("entry_points.inference", "unsafe_path"),
    ] {
        assert!(
            problems.contains(&expected),
            "{expected:?} not in {problems:?}"
        );
    }
    assert!(
        typos["problems"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    let out = ward(&["validate", "--format", "json", "models/digits/1.1.0"]);
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["versions"][0]["valid"], true, "{report}");
    assert_eq!(report["versions"][0]["problems"], serde_json::json!([]));

    assert_eq!(
        ward(&["validate", "--format", "xml"]).status.code(),
        Some(2)
    );
    assert_eq!(
        ward(&["validate", "--format", "json", "/nonexistent"])
            .status
            .code(),
        Some(2)
    );
}
