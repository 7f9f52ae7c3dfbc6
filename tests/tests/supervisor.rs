//! The supervisor with real workers: discovery, routing, deadlines, crashes,
//! restarts, health, rescans, admission, logs and shutdown (issue 4; spec 003
//! §11.3). Each test runs its own `ward serve` on port 0 in a scratch dir.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::server::{Ward, action_body, alive, bundled, digits_body, edit, install, misbehave};

const DIGIT_ZERO: [f32; 64] = [
    0., 0., 5., 13., 9., 1., 0., 0., 0., 0., 13., 15., 10., 15., 5., 0., 0., 3., 15., 2., 0., 11.,
    8., 0., 0., 4., 12., 0., 0., 8., 8., 0., 0., 5., 8., 0., 0., 9., 8., 0., 0., 4., 11., 0., 1.,
    12., 7., 0., 0., 2., 14., 5., 10., 12., 0., 0., 0., 0., 6., 13., 10., 0., 0., 0.,
];

fn pid(status: &Value) -> u64 {
    status["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid in {status}"))
}

fn infer_path(model: &str, version: &str) -> String {
    format!("/v2/models/{model}/versions/{version}/infer")
}

#[test]
fn two_versions_serve_side_by_side_and_routing_errors_are_typed() {
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
            install(root, &bundled("digits/1.1.0"), "digits");
        },
        &[],
    );
    let a = ward.wait_state("digits", "1.0.0", "READY");
    let b = ward.wait_state("digits", "1.1.0", "READY");
    assert_ne!(pid(&a), pid(&b), "one process per version");
    for v in ["1.0.0", "1.1.0"] {
        let (code, body) = ward.post(&infer_path("digits", v), &digits_body(&DIGIT_ZERO));
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["model_version"], v);
        assert_eq!(body["outputs"][0]["name"], "label");
        assert_eq!(body["outputs"][0]["data"], json!([0]));
    }
    let (code, body) = ward.post("/v2/models/digits/infer", &digits_body(&DIGIT_ZERO));
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("VERSION_REQUIRED")),
        "{body}"
    );
    let (code, body) = ward.post(&infer_path("nope", "1.0.0"), &digits_body(&DIGIT_ZERO));
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("MODEL_NOT_FOUND")),
        "{body}"
    );
    let (code, body) = ward.post(&infer_path("digits", "9.9.9"), &digits_body(&DIGIT_ZERO));
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("MODEL_NOT_FOUND")),
        "{body}"
    );
    let (code, body) = ward.post(&infer_path("digits", "1.0.0"), &digits_body(&[1.0; 63]));
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("INVALID_INPUT")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("needs 64 elements"),
        "{body}"
    );
    let (code, body) = ward.post(
        &infer_path("digits", "1.0.0"),
        &json!({"inputs": "garbage"}),
    );
    assert_eq!(
        (code, body["code"].as_str()),
        (400, Some("INVALID_INPUT")),
        "{body}"
    );
    let (code, _) = ward.get("/v2/health/ready");
    assert_eq!(code, 200);
    let (code, _) = ward.get("/v2/models/digits/versions/1.1.0/ready");
    assert_eq!(code, 200);
}

#[test]
fn a_raising_model_returns_an_error_turns_degraded_and_keeps_serving() {
    let ward = Ward::start(|root| drop(install(root, &misbehave(), "misbehave")), &[]);
    let before = ward.wait_state("misbehave", "1.0.0", "READY");
    let (code, body) = ward.post(&infer_path("misbehave", "1.0.0"), &action_body(1, 0.0));
    assert_eq!(
        (code, body["code"].as_str()),
        (502, Some("MODEL_ERROR")),
        "{body}"
    );
    assert_eq!(body["error"], "ValueError: boom");
    let status = ward.status("misbehave", "1.0.0");
    assert_eq!(status["health"]["health"], "DEGRADED", "{status}");
    assert_eq!(status["state"], "READY");
    let (code, body) = ward.post(&infer_path("misbehave", "1.0.0"), &action_body(0, 5.0));
    assert_eq!(code, 200, "{body}");
    let structured: Value =
        serde_json::from_str(body["parameters"]["structured"].as_str().unwrap()).unwrap();
    assert_eq!(structured, json!({"label": "ok", "confidence": 1.0}));
    assert_eq!(
        pid(&ward.status("misbehave", "1.0.0")),
        pid(&before),
        "the same worker kept serving"
    );
    // A schema violation and a wrong shape are the model's fault too.
    let (code, body) = ward.post(&infer_path("misbehave", "1.0.0"), &action_body(7, 0.0));
    assert_eq!(
        (code, body["code"].as_str()),
        (502, Some("INVALID_OUTPUT")),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("schema"), "{body}");
    let (code, body) = ward.post(&infer_path("misbehave", "1.0.0"), &action_body(6, 0.0));
    assert_eq!(
        (code, body["code"].as_str()),
        (502, Some("INVALID_OUTPUT")),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("shape"), "{body}");
}

#[test]
fn a_hanging_model_times_out_at_its_deadline_and_its_worker_is_restarted() {
    let ward = Ward::start(
        |root| {
            let dir = install(root, &misbehave(), "misbehave");
            edit(
                &dir.join("model.yaml"),
                "timeouts:\n  inference_ms: 1000",
                "timeouts:\n  inference_ms: 300\n  preprocess_ms: 50\n  postprocess_ms: 50",
            );
        },
        &[("WARD_COOLDOWN_MS", "100")],
    );
    let first = ward.wait_state("misbehave", "1.0.0", "READY");
    let deadline = Duration::from_millis(400);
    for round in 1..=3u64 {
        let asked = Instant::now();
        let (code, body) = ward.post(&infer_path("misbehave", "1.0.0"), &action_body(4, 0.0));
        let took = asked.elapsed();
        assert_eq!(
            (code, body["code"].as_str()),
            (504, Some("TIMEOUT")),
            "{body}"
        );
        assert!(
            took <= deadline + Duration::from_millis(100),
            "TIMEOUT after {took:?}"
        );
        // The hung worker is killed (whole group) and a new one serves.
        let status = ward.wait_for("misbehave", "1.0.0", Duration::from_secs(15), |s| {
            s["state"] == "READY" && s["generation"].as_u64() == Some(round + 1)
        });
        assert_ne!(pid(&status), pid(&first));
        assert!(!alive(pid(&first) as u32));
        assert_eq!(
            status["last_exit"]["cause"], "killed_for_deadline",
            "{status}"
        );
    }
    // Three timeouts in a row: UNHEALTHY, though READY (spec 003 §5.4).
    let status = ward.status("misbehave", "1.0.0");
    assert_eq!(status["health"]["health"], "UNHEALTHY", "{status}");
    assert!(
        status["health"]["reason"]
            .as_str()
            .unwrap()
            .contains("3 consecutive timeouts"),
        "{status}"
    );
    // A good answer starts the recovery.
    let (code, _) = ward.post(&infer_path("misbehave", "1.0.0"), &action_body(0, 0.0));
    assert_eq!(code, 200);
    assert_ne!(
        ward.status("misbehave", "1.0.0")["health"]["health"],
        "UNHEALTHY"
    );
}

#[test]
fn memory_exhaustion_in_one_model_leaves_the_others_untouched() {
    let ward = Ward::start(
        |root| {
            // Touching 2 GiB page by page takes seconds on a VM: a roomy deadline.
            let dir = install(root, &misbehave(), "misbehave");
            edit(
                &dir.join("model.yaml"),
                "inference_ms: 1000",
                "inference_ms: 30000",
            );
            install(root, &bundled("digits/1.0.0"), "digits");
        },
        &[],
    );
    ward.wait_state("misbehave", "1.0.0", "READY");
    let digits = ward.wait_state("digits", "1.0.0", "READY");
    let (code, body) = ward.post(&infer_path("misbehave", "1.0.0"), &action_body(5, 0.0));
    assert!(code == 502, "{code} {body}");
    assert!(
        ["MODEL_ERROR", "WORKER_CRASHED"].contains(&body["code"].as_str().unwrap()),
        "{body}"
    );
    let (code, _) = ward.post(&infer_path("digits", "1.0.0"), &digits_body(&DIGIT_ZERO));
    assert_eq!(code, 200);
    assert_eq!(
        pid(&ward.status("digits", "1.0.0")),
        pid(&digits),
        "the neighbour was not touched"
    );
}

#[test]
fn rescan_unloads_deleted_marks_invalid_and_adds_new_versions_without_touching_the_rest() {
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
            install(root, &bundled("cnn/1.0.0"), "cnn");
        },
        &[],
    );
    ward.wait_state("digits", "1.0.0", "READY");
    let cnn = ward.wait_state("cnn", "1.0.0", "READY");
    let old_pid = pid(&ward.status("digits", "1.0.0")) as u32;

    std::fs::remove_dir_all(ward.models().join("digits/1.0.0")).unwrap();
    let broken = ward.models().join("broken/1.0.0");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("model.yaml"),
        "model_id: broken\nversion: \"1.0.0\"\ninput: {type: video}\n",
    )
    .unwrap();
    install(&ward.models(), &bundled("digits/1.1.0"), "digits");
    ward.signal(Signal::SIGHUP);

    let gone = ward.wait_state("digits", "1.0.0", "UNLOADED");
    assert!(gone["pid"].is_null());
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(old_pid) {
        assert!(Instant::now() < deadline, "the unloaded worker still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (code, body) = ward.post(&infer_path("digits", "1.0.0"), &digits_body(&DIGIT_ZERO));
    assert_eq!(
        (code, body["code"].as_str()),
        (503, Some("MODEL_NOT_READY")),
        "{body}"
    );

    let invalid = ward.wait_state("broken", "1.0.0", "INVALID");
    let reason = invalid["reason"].as_str().unwrap();
    assert!(
        reason.contains("input.type") && reason.contains("output"),
        "{reason}"
    );

    ward.wait_state("digits", "1.1.0", "READY");
    let (code, _) = ward.post(&infer_path("digits", "1.1.0"), &digits_body(&DIGIT_ZERO));
    assert_eq!(code, 200);
    // Unchanged models were not touched.
    let cnn_now = ward.status("cnn", "1.0.0");
    assert_eq!(pid(&cnn_now), pid(&cnn));
    assert_eq!(cnn_now["generation"], 1);
}

#[test]
fn kill_9_of_one_worker_under_load_costs_the_other_models_nothing() {
    let ward = Arc::new(Ward::start(
        |root| {
            install(root, &misbehave(), "misbehave");
            install(root, &bundled("digits/1.0.0"), "digits");
            install(root, &bundled("cnn/1.0.0"), "cnn");
        },
        &[("WARD_COOLDOWN_MS", "500")],
    ));
    let victim = ward.wait_state("misbehave", "1.0.0", "READY");
    ward.wait_state("digits", "1.0.0", "READY");
    ward.wait_state("cnn", "1.0.0", "READY");
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let cnn_input = json!({"inputs": [{"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": vec![0.5f32; 3 * 64 * 64]}]});
    let load: Vec<_> = [("digits", digits_body(&DIGIT_ZERO)), ("cnn", cnn_input)]
        .into_iter()
        .map(|(model, body)| {
            let (ward, stop, failures, served) =
                (ward.clone(), stop.clone(), failures.clone(), served.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (code, b) = ward.post(&infer_path(model, "1.0.0"), &body);
                    if code == 200 {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        eprintln!("{model}: {code} {b}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Let the load run, then kill the victim.
    let warm = Instant::now() + Duration::from_secs(10);
    while served.load(Ordering::Relaxed) < 50 {
        assert!(Instant::now() < warm, "no load got through");
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid(&victim) as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    // Health does not lie: not ready within one second.
    ward.assert_unready_within("misbehave", "1.0.0", killed, Duration::from_secs(1));
    let back = ward.wait_for("misbehave", "1.0.0", Duration::from_secs(15), |s| {
        s["state"] == "READY" && s["generation"] == 2
    });
    assert!(
        back["last_exit"]["status"]
            .as_str()
            .unwrap()
            .contains("SIGKILL"),
        "{back}"
    );
    let before = served.load(Ordering::Relaxed);
    let more = Instant::now() + Duration::from_secs(10);
    while served.load(Ordering::Relaxed) < before + 20 {
        assert!(Instant::now() < more);
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed on the other models"
    );
    let (code, _) = ward.post(&infer_path("misbehave", "1.0.0"), &action_body(0, 0.0));
    assert_eq!(
        code, 200,
        "the killed model serves again after its cooldown"
    );
}

#[test]
fn a_worker_that_always_crashes_is_restarted_max_retries_times_then_stays_error_until_reloaded() {
    let token = "operator-token-0123456789";
    let ward = Ward::start(
        |root| {
            let dir = install(root, &misbehave(), "crashy");
            std::fs::write(dir.join("config.yaml"), "exit_after_ms: 200\n").unwrap();
        },
        &[
            ("WARD_MAX_RETRIES", "2"),
            ("WARD_COOLDOWN_MS", "100"),
            ("WARD_ADMIN_TOKEN", token),
        ],
    );
    let status = ward.wait_for("crashy", "1.0.0", Duration::from_secs(30), |s| {
        s["state"] == "ERROR" && s["reason"].as_str().is_some_and(|r| r.contains("gave up"))
    });
    assert_eq!(status["restarts"], 2, "{status}");
    assert_eq!(
        status["generation"], 3,
        "the first start and exactly max_retries restarts: {status}"
    );
    // The plugin exited (status 4); its worker noticed while idle and exited 70.
    assert_eq!(status["last_exit"]["status"], "exit status 70", "{status}");
    let tail = status["last_exit"]["stderr_tail"].to_string();
    assert!(
        tail.contains("the plugin process exited (exit status: 4)"),
        "{tail}"
    );
    assert!(status["pid"].is_null());
    let (code, body) = ward.post(&infer_path("crashy", "1.0.0"), &action_body(0, 0.0));
    assert_eq!(
        (code, body["code"].as_str()),
        (503, Some("MODEL_NOT_READY")),
        "{body}"
    );

    // Without the token the admin API refuses; with it, a reload brings the model back.
    let (code, _) = ward.post_auth(
        "/v1/admin/models/crashy/versions/1.0.0/reload",
        "wrong-token-0123456789",
    );
    assert_eq!(code, 401);
    std::fs::write(ward.models().join("crashy/1.0.0/config.yaml"), "{}\n").unwrap();
    let (code, body) = ward.post_auth("/v1/admin/models/crashy/versions/1.0.0/reload", token);
    assert_eq!(code, 200, "{body}");
    ward.wait_state("crashy", "1.0.0", "READY");
    let (code, _) = ward.post(&infer_path("crashy", "1.0.0"), &action_body(0, 0.0));
    assert_eq!(code, 200);
}

#[test]
fn the_admin_api_does_not_exist_without_a_token() {
    let ward = Ward::start(
        |root| drop(install(root, &bundled("digits/1.0.0"), "digits")),
        &[],
    );
    let (code, body) = ward.post_auth("/v1/admin/rescan", "anything-at-all-12345");
    assert_eq!(code, 404, "{body}");
}

#[test]
fn after_sigkill_of_the_supervisor_no_worker_remains() {
    let mut ward = Ward::start(
        |root| {
            install(root, &misbehave(), "misbehave");
            install(root, &bundled("digits/1.0.0"), "digits");
        },
        &[],
    );
    let roots = [
        pid(&ward.wait_state("misbehave", "1.0.0", "READY")) as u32,
        pid(&ward.wait_state("digits", "1.0.0", "READY")) as u32,
    ];
    // Every process under both workers: jailer, the sandbox's pid 1, the
    // worker, and the Python plugin process.
    let pids: Vec<u32> = roots
        .iter()
        .flat_map(|p| crate::server::process_tree(*p))
        .collect();
    assert!(
        pids.len() >= 3,
        "two workers and a plugin process at least: {pids:?}"
    );
    ward.signal(Signal::SIGKILL);
    ward.wait_exit(Duration::from_secs(5)).expect("ward died");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "orphans remain: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // And none of this supervisor's workers hides under another pid.
    let mine: Vec<u32> = crate::server::worker_pids()
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains(&*ward.dir.path().to_string_lossy()))
        })
        .collect();
    assert!(mine.is_empty(), "orphaned workers: {mine:?}");
}

#[test]
fn sigterm_drains_in_flight_requests_and_stops_every_worker() {
    let mut ward = Ward::start(|root| drop(install(root, &misbehave(), "misbehave")), &[]);
    let worker = pid(&ward.wait_state("misbehave", "1.0.0", "READY")) as u32;
    let url = ward.url.clone();
    let slow = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(format!("{url}/v2/models/misbehave/versions/1.0.0/infer"))
            .send(action_body(9, 600.0).to_string())
            .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    });
    ward.wait_for("misbehave", "1.0.0", Duration::from_secs(5), |s| {
        s["in_flight"] == 1
    });
    ward.signal(Signal::SIGTERM);
    let (code, body) = slow.join().unwrap();
    assert_eq!(code, 200, "the in-flight request was drained: {body}");
    let status = ward
        .wait_exit(Duration::from_secs(15))
        .expect("ward exited");
    assert!(status.success(), "{status:?}\n{}", ward.stderr());
    assert!(!alive(worker));
}

#[test]
fn a_full_queue_answers_overloaded_at_once() {
    let ward = Arc::new(Ward::start(
        |root| drop(install(root, &misbehave(), "misbehave")),
        &[("WARD_MAX_QUEUE", "1"), ("WARD_MAX_IN_FLIGHT", "1")],
    ));
    ward.wait_state("misbehave", "1.0.0", "READY");
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let ward = ward.clone();
            std::thread::spawn(move || {
                let asked = Instant::now();
                let (code, body) =
                    ward.post(&infer_path("misbehave", "1.0.0"), &action_body(9, 800.0));
                (code, body, asked.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    let overloaded: Vec<_> = results
        .iter()
        .filter(|(c, b, _)| *c == 503 && b["code"] == "OVERLOADED")
        .collect();
    assert!(!overloaded.is_empty(), "{results:?}");
    assert!(
        results.iter().filter(|(c, ..)| *c == 200).count() >= 2,
        "{results:?}"
    );
    for (_, _, took) in overloaded {
        assert!(
            *took < Duration::from_millis(700),
            "OVERLOADED must not wait for room ({took:?})"
        );
    }
}

#[test]
fn admission_loads_higher_versions_first_shows_what_it_skipped_and_retries_it_when_memory_frees() {
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
            install(root, &bundled("digits/1.1.0"), "digits");
        },
        &[("WARD_MEMORY_BUDGET_MB", "300")],
    );
    ward.wait_state("digits", "1.1.0", "READY");
    let skipped = ward.wait_state("digits", "1.0.0", "FAILED");
    let reason = skipped["reason"].as_str().unwrap();
    assert!(reason.starts_with("skipped: needs 256 MB"), "{reason}");
    // The rescan that unloads the removed 1.1.0 frees what 1.0.0 needs, and
    // retries it (issue 12).
    std::fs::remove_dir_all(ward.models().join("digits/1.1.0")).unwrap();
    ward.signal(Signal::SIGHUP);
    ward.wait_state("digits", "1.1.0", "UNLOADED");
    ward.wait_state("digits", "1.0.0", "READY");
    let (code, body) = ward.post(&infer_path("digits", "1.0.0"), &digits_body(&DIGIT_ZERO));
    assert_eq!(code, 200, "{body}");
}

#[test]
fn worker_output_goes_to_one_log_file_per_version_across_restarts() {
    let ward = Ward::start(
        |root| {
            let dir = install(root, &misbehave(), "crashy");
            std::fs::write(dir.join("config.yaml"), "exit_after_ms: 300\n").unwrap();
        },
        &[("WARD_MAX_RETRIES", "1"), ("WARD_COOLDOWN_MS", "100")],
    );
    ward.wait_for("crashy", "1.0.0", Duration::from_secs(30), |s| {
        s["state"] == "ERROR" && s["reason"].as_str().is_some_and(|r| r.contains("gave up"))
    });
    let log = std::fs::read_to_string(ward.dir.path().join("logs/crashy/1.0.0.log")).unwrap();
    assert_eq!(log.matches("misbehave 1.0.0 loaded").count(), 2, "{log}");
    assert!(log.contains("started (generation 2)"), "{log}");
    let status = ward.status("crashy", "1.0.0");
    let tail = status["last_exit"]["stderr_tail"].as_array().unwrap();
    assert!(
        tail.iter().any(|l| l.as_str().unwrap().contains("loaded")),
        "{status}"
    );
}

#[test]
fn readiness_follows_the_aggregate_rule() {
    let ward = Ward::start(
        |root| {
            let dir = install(root, &misbehave(), "misbehave");
            std::fs::write(dir.join("config.yaml"), "on_load: 1\n").unwrap();
        },
        &[],
    );
    let failed = ward.wait_state("misbehave", "1.0.0", "FAILED");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("ValueError: boom"),
        "{failed}"
    );
    let (code, body) = ward.get("/v2/health/ready");
    assert_eq!(code, 400, "no model is serving: {body}");
    let (code, body) = ward.get("/v2/health/live");
    assert_eq!(code, 200, "{body}");
    let (code, body) = ward.get("/v1/health");
    assert_eq!(code, 200);
    assert_eq!(body["status"], "UNHEALTHY", "{body}");
}
