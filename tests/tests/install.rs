//! `./setup.sh install` (issue 13): ward and ward-worker copied into a prefix
//! with a config naming this checkout's models, ONNX Runtime and Python, so
//! that the installed `ward serve` serves the bundled models from a bare
//! environment. The test installs the binaries it built (WARD_INSTALL_FROM)
//! into a temporary prefix and config path, never into /usr/local or /etc.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::server::{Ward, digits_body};
use crate::support::{onnxruntime, repo};

/// Runs `./setup.sh install` from `from` into `prefix`, writing `config`.
fn setup_install(from: &Path, prefix: &Path, config: &Path) -> Output {
    let out = Command::new(repo().join("setup.sh"))
        .arg("install")
        .env("WARD_INSTALL_FROM", from)
        .env("WARD_PREFIX", prefix)
        .env("WARD_CONFIG", config)
        .stdin(Stdio::null())
        .output()
        .expect("run setup.sh install");
    assert!(
        out.status.success(),
        "setup.sh install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[test]
fn installed_ward_serves_the_bundled_models_with_nothing_exported() {
    let dir = tempfile::tempdir().unwrap();
    // The binaries this test run built, under the names setup.sh installs.
    let from = dir.path().join("build");
    std::fs::create_dir_all(&from).unwrap();
    for (exe, built) in [
        ("ward", env!("CARGO_BIN_EXE_it-ward")),
        ("ward-worker", env!("CARGO_BIN_EXE_it-ward-worker")),
    ] {
        std::os::unix::fs::symlink(built, from.join(exe)).unwrap();
    }
    let prefix = dir.path().join("prefix");
    let config = dir.path().join("etc/ward/ward.yaml");

    let first = setup_install(&from, &prefix, &config);
    let said = String::from_utf8_lossy(&first.stderr);
    for what in ["installed", "bin/ward\n", "bin/ward-worker\n", "wrote"] {
        assert!(said.contains(what), "{said}");
    }
    for exe in ["ward", "ward-worker"] {
        let installed = prefix.join("bin").join(exe);
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            std::fs::read(from.join(exe)).unwrap(),
            "{exe}"
        );
    }
    let written = std::fs::read_to_string(&config).unwrap();
    let ort = onnxruntime();
    for line in [
        format!("model_root: '{}'", repo().join("models").display()),
        format!("  python: '{}'", repo().join(".venv/bin/python").display()),
        format!("  onnxruntime_library: '{}'", ort.display()),
    ] {
        assert!(written.contains(&line), "{line:?} not in\n{written}");
    }

    // Idempotent and quiet: nothing copied, nothing written, nothing said.
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = (mtime(&prefix.join("bin/ward")), mtime(&config));
    let again = setup_install(&from, &prefix, &config);
    assert_eq!(String::from_utf8_lossy(&again.stderr), "");
    assert_eq!((mtime(&prefix.join("bin/ward")), mtime(&config)), before);

    // A new shell: only PATH (with the prefix on it) and, because this test
    // must not touch /etc/ward, WARD_CONFIG naming the installed config.
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let path = format!("{}:/usr/bin:/bin", prefix.join("bin").display());
    let mut cmd = Command::new("ward");
    cmd.args([
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--grpc-bind",
        "127.0.0.1:0",
    ])
    .current_dir(&cwd)
    .env_clear()
    .env("PATH", &path)
    .env("WARD_CONFIG", &config);
    let ward = Ward::spawn(cmd, dir);
    for (model, version) in [("digits", "1.1.0"), ("brightness", "1.0.0")] {
        let s = ward.wait_for(model, version, Duration::from_secs(90), |s| {
            s["state"] == "READY" || s["state"] == "FAILED"
        });
        assert_eq!(s["state"], "READY", "{s}\n{}", ward.stderr());
    }
    // The config file, not a default model root, chose what is served.
    let log = ward.stderr();
    assert!(log.contains(&config.display().to_string()), "{log}");

    let (code, body) = ward.post(
        "/v2/models/digits/versions/1.1.0/infer",
        &digits_body(&[0.0; 64]),
    );
    assert_eq!(code, 200, "{body}");
    let label = &body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap_or_else(|| panic!("{body}"))["data"][0];
    assert!(
        label.as_i64().is_some_and(|l| (0..10).contains(&l)),
        "{body}"
    );

    for (rgb, want) in [([10, 10, 10], "dark"), ([240, 240, 240], "bright")] {
        let (code, body) = ward.post_bytes(
            "/v1/models/brightness/versions/1.0.0/frame",
            "image/png",
            &png(16, 16, rgb),
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["result"]["event_type"], want, "{body}");
    }
    assert_eq!(
        ward.get("/v2/health/ready").0,
        200,
        "{}",
        ward.get("/v1/health").1
    );
}
