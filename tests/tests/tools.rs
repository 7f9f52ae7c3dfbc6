//! Operators' tools against a real `ward serve`, unmodified: KServe's own
//! Python SDK (it only posts to the unversioned infer route and names the
//! model in the body), stock tritonclient (http and grpc) on Triton's
//! extensions (model configuration, statistics, the model repository with
//! its load and unload behind the admin token), the readiness policy
//! `server.ready_when` as HTTP and gRPC health report it, and CORS as
//! `curl` sees a browser's preflight answered.
//!
//! The clients are Python scripts in `tests/support/` (kserve_sdk_client.py,
//! triton_tools.py); each prints an "ok: ..." line per check and "ok: all
//! checks passed" at the end, and every wait in them is bounded (so is each
//! script, from here).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{Ward, bundled, digits_body, install, misbehave};
use crate::server::{grpc_addr, metric};
use crate::support::passes;

/// The admin token (ward wants at least 16 characters).
const TOKEN: &str = "secret-admin-token-4242";

/// `ward_requests_total` of digits at `version` with `outcome`, 0 when absent.
fn requests(ward: &Ward, version: &str, outcome: &str) -> f64 {
    metric(
        ward,
        &format!(
            r#"ward_requests_total{{model="digits",version="{version}",outcome="{outcome}"}}"#
        ),
    )
    .unwrap_or(0.0)
}

fn http_addr(ward: &Ward) -> &str {
    ward.url.strip_prefix("http://").unwrap()
}

/// The 64 pixels of the bundled digits data set's first sample (a zero).
const DIGIT_ZERO: [f32; 64] = [
    0., 0., 5., 13., 9., 1., 0., 0., 0., 0., 13., 15., 10., 15., 5., 0., 0., 3., 15., 2., 0., 11.,
    8., 0., 0., 4., 12., 0., 0., 8., 8., 0., 0., 5., 8., 0., 0., 9., 8., 0., 0., 4., 11., 0., 1.,
    12., 7., 0., 0., 2., 14., 5., 10., 12., 0., 0., 0., 0., 6., 13., 10., 0., 0., 0.,
];

/// A digits body that also names a model and a version, as some clients do.
fn named_body(model: &str, version: Option<&str>) -> Value {
    let mut body = digits_body(&DIGIT_ZERO);
    body["model_name"] = json!(model);
    if let Some(v) = version {
        body["model_version"] = json!(v);
    }
    body
}

#[track_caller]
fn assert_code(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(
        (answer.0, answer.1["code"].as_str()),
        (status, Some(code)),
        "{}",
        answer.1
    );
}

#[test]
fn the_kserve_sdk_unmodified_infers_on_the_unversioned_route_when_one_version_is_loaded() {
    let ward = Ward::start(
        |root| drop(install(root, &bundled("digits/1.1.0"), "digits")),
        &[],
    );
    ward.wait_state("digits", "1.1.0", "READY");
    // The other version's network is the script's proof that 1.1.0 answered.
    let both = tempfile::tempdir().unwrap();
    for v in ["1.0.0", "1.1.0"] {
        install(both.path(), &bundled(&format!("digits/{v}")), "digits");
    }
    passes(
        "kserve_sdk_client.py",
        &[
            "one",
            &ward.url,
            grpc_addr(&ward),
            both.path().to_str().unwrap(),
            "1.1.0",
        ],
        Duration::from_secs(180),
        &[
            "ok: is_server_live",
            "ok: is_server_ready",
            "ok: is_model_ready digits",
            "ok: is_model_ready nope: False",
            "ok: labels equal in-process onnxruntime 1.1.0 (binary inputs=False, binary outputs=False)",
            "ok: probabilities within 1e-5 of 1.1.0 (binary inputs=False, binary outputs=False)",
            "ok: not 1.0.0's probabilities (binary inputs=False, binary outputs=False)",
            "ok: labels equal in-process onnxruntime 1.1.0 (binary inputs=True, binary outputs=False)",
            "ok: probabilities within 1e-5 of 1.1.0 (binary inputs=True, binary outputs=False)",
            "ok: labels equal in-process onnxruntime 1.1.0 (binary inputs=True, binary outputs=True)",
            "ok: probabilities within 1e-5 of 1.1.0 (binary inputs=True, binary outputs=True)",
            "ok: binary answer framed as asked (binary inputs=True, binary outputs=True)",
            "ok: request id echoed (binary inputs=True, binary outputs=True)",
            "ok: a body with model_name cnn: 400 INVALID_INPUT",
            "ok: a body with model_version 1.0.0: 400 INVALID_INPUT",
            "ok: a body with model_version 1.1.0 is served",
            "ok: grpc is_model_ready digits",
            "ok: grpc labels equal in-process onnxruntime 1.1.0 (raw contents=False)",
            "ok: grpc probabilities within 1e-5 of 1.1.0 (raw contents=False)",
            "ok: grpc labels equal in-process onnxruntime 1.1.0 (raw contents=True)",
            "ok: grpc probabilities within 1e-5 of 1.1.0 (raw contents=True)",
            "ok: grpc not 1.0.0's probabilities (raw contents=True)",
        ],
    );
    // Counted as 1.1.0's: the four REST inferences, the one naming 1.1.0
    // and the two over gRPC as successes, the two mismatched bodies as
    // INVALID_INPUT.
    assert_eq!(requests(&ward, "1.1.0", "ok"), 7.0);
    assert_eq!(requests(&ward, "1.1.0", "invalid_input"), 2.0);
}

#[test]
fn with_two_versions_loaded_an_unversioned_request_needs_a_version_until_one_is_unloaded() {
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.0.0"), "digits");
            install(root, &bundled("digits/1.1.0"), "digits");
        },
        &[("WARD_ADMIN_TOKEN", TOKEN)],
    );
    ward.wait_state("digits", "1.0.0", "READY");
    ward.wait_state("digits", "1.1.0", "READY");
    passes(
        "kserve_sdk_client.py",
        &["several", &ward.url, grpc_addr(&ward)],
        Duration::from_secs(120),
        &[
            "ok: is_model_ready digits",
            "ok: two versions loaded, unversioned (binary=False): 400 VERSION_REQUIRED",
            "ok: two versions loaded, unversioned (binary=True): 400 VERSION_REQUIRED",
            "ok: grpc, two versions loaded, unversioned: StatusCode.FAILED_PRECONDITION 'VERSION_REQUIRED: ",
        ],
    );

    // On the versioned route the body's names must be the route's.
    let v1 = "/v2/models/digits/versions/1.0.0/infer";
    assert_code(
        &ward.post(v1, &named_body("cnn", None)),
        400,
        "INVALID_INPUT",
    );
    assert_code(
        &ward.post(v1, &named_body("digits", Some("1.1.0"))),
        400,
        "INVALID_INPUT",
    );
    for body in [
        named_body("digits", Some("1.0.0")),
        named_body("digits", None),
        // Empty is as absent (what a client that always sends the field says).
        named_body("", Some("")),
    ] {
        let (code, answer) = ward.post(v1, &body);
        assert_eq!(code, 200, "{body} -> {answer}");
        assert_eq!(answer["model_version"], "1.0.0", "{answer}");
        assert_eq!(answer["outputs"][0]["data"], json!([0]), "{answer}");
    }
    // The unversioned route with a body naming a version is still ambiguous.
    assert_code(
        &ward.post(
            "/v2/models/digits/infer",
            &named_body("digits", Some("1.1.0")),
        ),
        400,
        "VERSION_REQUIRED",
    );

    // One version unloaded: the other is the model's only loaded version.
    let (code, body) = ward.post_auth("/v1/admin/models/digits/versions/1.0.0/unload", TOKEN);
    assert_eq!(code, 200, "{body}");
    ward.wait_state("digits", "1.0.0", "UNLOADED");
    let (code, answer) = ward.post("/v2/models/digits/infer", &digits_body(&DIGIT_ZERO));
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["model_version"], "1.1.0", "{answer}");
    assert_eq!(answer["outputs"][0]["data"], json!([0]), "{answer}");
    // The body is checked against the version that serves.
    assert_code(
        &ward.post(
            "/v2/models/digits/infer",
            &named_body("digits", Some("1.0.0")),
        ),
        400,
        "INVALID_INPUT",
    );
    let (code, answer) = ward.post(
        "/v2/models/digits/infer",
        &named_body("digits", Some("1.1.0")),
    );
    assert_eq!(
        (code, &answer["model_version"]),
        (200, &json!("1.1.0")),
        "{answer}"
    );

    // None loaded: not ready, and no version to pick.
    let (code, body) = ward.post_auth("/v1/admin/models/digits/versions/1.1.0/unload", TOKEN);
    assert_eq!(code, 200, "{body}");
    ward.wait_state("digits", "1.1.0", "UNLOADED");
    let answer = ward.post("/v2/models/digits/infer", &digits_body(&DIGIT_ZERO));
    assert_code(&answer, 503, "MODEL_NOT_READY");
}

#[test]
fn stock_tritonclient_reads_config_and_statistics_and_drives_the_repository() {
    let ward = Ward::start(
        |root| {
            install(root, &bundled("digits/1.1.0"), "digits");
            // A second model, to stay READY while digits is unloaded.
            install(root, &bundled("digits/1.0.0"), "copy");
        },
        &[("WARD_ADMIN_TOKEN", TOKEN)],
    );
    ward.wait_state("digits", "1.1.0", "READY");
    ward.wait_state("copy", "1.0.0", "READY");
    let (http, grpc) = (http_addr(&ward), grpc_addr(&ward));
    passes(
        "triton_tools.py",
        &["config", http, grpc],
        Duration::from_secs(120),
        &[
            "ok: http server metadata extensions",
            "ok: grpc server metadata extensions",
            "ok: http config digits '1.1.0'",
            "ok: grpc config digits '1.1.0'",
            "ok: http config digits ''",
            "ok: grpc config digits ''",
            "ok: http config of an unknown model: 404",
            "ok: grpc config of an unknown model: StatusCode.NOT_FOUND",
        ],
    );
    // The REST answer as it is, beside what tritonclient made of it.
    let (code, config) = ward.get("/v2/models/digits/versions/1.1.0/config");
    assert_eq!(code, 200, "{config}");
    assert_eq!(config["max_batch_size"], 0, "{config}");
    assert_eq!(
        config["input"],
        json!([{ "name": "input", "data_type": "TYPE_FP32", "dims": [-1, 64] }]),
        "{config}"
    );

    let n = 5;
    passes(
        "triton_tools.py",
        &["stats", http, grpc, &n.to_string()],
        Duration::from_secs(120),
        &[
            "ok: a fresh version has no requests",
            "ok: success: +10 requests",
            "ok: fail: +1 request",
            "ok: queue: +10 requests",
            "ok: compute_input: +10 requests",
            "ok: compute_infer: +10 requests",
            "ok: compute_output: +10 requests",
            "ok: compute_infer: +",
            "ok: no cache",
            "ok: inference_count 10, execution_count 10",
            "ok: last_inference ",
            "ok: the model's statistics hold the version's",
            "ok: all statistics hold the version's",
            "ok: http statistics of an unknown model: 404",
            "ok: grpc statistics of an unknown model: StatusCode.NOT_FOUND",
            "ok: http statistics of an unknown version: 404",
            "ok: grpc statistics of an unknown version: StatusCode.NOT_FOUND",
        ],
    );
    // The same requests as /metrics counts them.
    assert_eq!(requests(&ward, "1.1.0", "ok"), f64::from(2 * n));
    assert_eq!(requests(&ward, "1.1.0", "invalid_input"), 1.0);

    let before = ward.status("digits", "1.1.0");
    passes(
        "triton_tools.py",
        &[
            "repository",
            http,
            grpc,
            TOKEN,
            "digits/1.1.0",
            "copy/1.0.0",
        ],
        Duration::from_secs(180),
        &[
            "ok: index: every version READY",
            "ok: http unload with no token: 401",
            "ok: http load with no token: 401",
            "ok: grpc unload with no token: StatusCode.UNAUTHENTICATED",
            "ok: grpc load with no token: StatusCode.UNAUTHENTICATED",
            "ok: http unload with a wrong token: 401",
            "ok: grpc load with a wrong token: StatusCode.UNAUTHENTICATED",
            "ok: digits still ready after the refused calls",
            "ok: http unload: digits not ready",
            "ok: http unload: the index has no digits READY",
            "ok: http unload: the other models stay READY",
            "ok: http unload: inference refused: 503",
            "ok: http load: digits ready again",
            "ok: http load: index every version READY again",
            "ok: http load: digits serves",
            "ok: grpc unload: digits not ready",
            "ok: grpc load: digits ready again",
            "ok: grpc load: digits serves",
            "ok: http load of an unknown model: 404",
            "ok: grpc load of an unknown model: StatusCode.NOT_FOUND",
            "ok: http unload of an unknown model: 404",
        ],
    );
    // Each load was a reload: a new worker; copy's was left alone.
    let after = ward.status("digits", "1.1.0");
    assert_eq!(after["state"], "READY", "{after}");
    assert_ne!(after["pid"], before["pid"], "{before} {after}");
    assert!(after["pid"].as_u64().is_some(), "{after}");
}

#[test]
fn triton_s_load_picks_up_the_versions_added_and_removed_on_disk() {
    let ward = Ward::start(
        |root| drop(install(root, &bundled("digits/1.1.0"), "digits")),
        &[("WARD_ADMIN_TOKEN", TOKEN)],
    );
    ward.wait_state("digits", "1.1.0", "READY");
    // A version added on disk, then `load`: Triton reads the model's
    // directory again and loads it.
    install(&ward.models(), &bundled("digits/1.0.0"), "digits");
    let (code, body) = ward.post_auth("/v2/repository/models/digits/load", TOKEN);
    assert_eq!(code, 200, "{body}");
    ward.wait_state("digits", "1.0.0", "READY");
    // A version removed from disk, then `load`: it is unloaded, the rest
    // serves.
    std::fs::remove_dir_all(ward.models().join("digits/1.1.0")).unwrap();
    let (code, body) = ward.post_auth("/v2/repository/models/digits/load", TOKEN);
    assert_eq!(code, 200, "{body}");
    ward.wait_state("digits", "1.0.0", "READY");
    let (code, index) = ward.post("/v2/repository/index", &json!({ "ready": true }));
    assert_eq!(code, 200, "{index}");
    assert_eq!(
        index,
        json!([{ "name": "digits", "version": "1.0.0", "state": "READY" }])
    );
    let (code, answer) = ward.post("/v2/models/digits/infer", &digits_body(&DIGIT_ZERO));
    assert_eq!(
        (code, &answer["model_version"]),
        (200, &json!("1.0.0")),
        "{answer}"
    );
}

/// Installs digits 1.1.0 (loads) and misbehave as `broken` (its load
/// raises: FAILED for good), and writes `ward_yaml` (when given) as
/// `ward.yaml` beside the model root.
fn good_and_broken(root: &Path, ward_yaml: Option<&str>) {
    install(root, &bundled("digits/1.1.0"), "digits");
    let dir = install(root, &misbehave(), "broken");
    std::fs::write(dir.join("config.yaml"), "on_load: 1\n").unwrap();
    if let Some(yaml) = ward_yaml {
        std::fs::write(root.parent().unwrap().join("ward.yaml"), yaml).unwrap();
    }
}

/// Asserts `/v2/health/ready`'s answer and what tritonclient (http, grpc)
/// and the gRPC health service say of the server.
#[track_caller]
fn assert_ready(ward: &Ward, policy: &str, ready: bool) {
    let (code, body) = ward.get("/v2/health/ready");
    assert_eq!(
        (code, &body["ready"]),
        (if ready { 200 } else { 400 }, &json!(ready)),
        "{policy}: {body}"
    );
    assert_eq!(ward.get("/v2/health/live").0, 200, "{policy}");
    passes(
        "triton_tools.py",
        &[
            "ready",
            http_addr(ward),
            grpc_addr(ward),
            if ready { "yes" } else { "no" },
        ],
        Duration::from_secs(60),
        &[if ready {
            "ok: health '': SERVING"
        } else {
            "ok: health '': NOT_SERVING"
        }],
    );
}

#[test]
fn readiness_follows_server_ready_when() {
    let pin = |model: &str, version: &str| {
        format!("models:\n  pinned_versions:\n    {model}: [\"{version}\"]\n")
    };
    let (pin_good, pin_broken) = (pin("digits", "1.1.0"), pin("broken", "1.0.0"));
    // (what, WARD_READY_WHEN, ward.yaml, ready with `broken` FAILED)
    let cases: [(&str, &str, Option<&str>, bool); 4] = [
        ("any", "any", None, true),
        ("all", "all", None, false),
        ("pinned digits", "pinned", Some(pin_good.as_str()), true),
        ("pinned broken", "pinned", Some(pin_broken.as_str()), false),
    ];
    // All four start at once; their models load side by side.
    let wards: Vec<Ward> = cases
        .iter()
        .map(|&(_, policy, yaml, _)| {
            let config = if yaml.is_some() {
                "ward.yaml"
            } else {
                "/dev/null"
            };
            Ward::start(
                |root| good_and_broken(root, yaml),
                &[
                    ("WARD_READY_WHEN", policy),
                    ("WARD_CONFIG", config),
                    ("WARD_ADMIN_TOKEN", TOKEN),
                ],
            )
        })
        .collect();
    for ((what, _, _, ready), ward) in cases.iter().zip(&wards) {
        ward.wait_state("digits", "1.1.0", "READY");
        let failed = ward.wait_state("broken", "1.0.0", "FAILED");
        assert!(
            failed["reason"]
                .as_str()
                .is_some_and(|r| r.contains("ValueError: boom")),
            "{what}: {failed}"
        );
        assert_ready(ward, what, *ready);
    }
    // The repository index: every version with its state (and why it
    // failed); `ready` only the READY ones.
    let all = &wards[1];
    let (code, index) = all.post("/v2/repository/index", &json!({}));
    assert_eq!(code, 200, "{index}");
    assert_eq!(index.as_array().map(Vec::len), Some(2), "{index}");
    assert_eq!(
        (&index[0]["name"], &index[0]["state"]),
        (&json!("broken"), &json!("FAILED")),
        "{index}"
    );
    assert!(
        index[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ValueError: boom")),
        "{index}"
    );
    assert_eq!(
        index[1],
        json!({ "name": "digits", "version": "1.1.0", "state": "READY" })
    );
    let (code, index) = all.post("/v2/repository/index", &json!({ "ready": true }));
    assert_eq!(code, 200, "{index}");
    assert_eq!(
        index,
        json!([{ "name": "digits", "version": "1.1.0", "state": "READY" }])
    );
    // `all` counts what is configured: the failed version unloaded, the
    // rest is READY.
    let (code, body) = all.post_auth("/v1/admin/models/broken/versions/1.0.0/unload", TOKEN);
    assert_eq!(code, 200, "{body}");
    all.wait_state("broken", "1.0.0", "UNLOADED");
    assert_ready(all, "all, broken unloaded", true);
    // And `pinned` wants its pinned version READY, not merely present.
    let pinned = &wards[2];
    let (code, body) = pinned.post_auth("/v1/admin/models/digits/versions/1.1.0/unload", TOKEN);
    assert_eq!(code, 200, "{body}");
    pinned.wait_state("digits", "1.1.0", "UNLOADED");
    assert_ready(pinned, "pinned digits, digits unloaded", false);
}

/// What `curl -si` got: the status and the headers (names lowercased; a
/// repeated header's values joined with ", ").
fn curl(args: &[&str]) -> (u16, BTreeMap<String, String>) {
    let out = Command::new("curl")
        .args(["-si", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "curl {args:?}: {text}");
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("curl {args:?}: no status line in {text:?}"));
    let mut headers = BTreeMap::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':').unwrap();
        headers
            .entry(k.trim().to_ascii_lowercase())
            .and_modify(|old: &mut String| {
                old.push_str(", ");
                old.push_str(v.trim());
            })
            .or_insert_with(|| v.trim().to_owned());
    }
    (status, headers)
}

/// A browser's preflight for a POST with a JSON body from `origin`.
fn preflight(url: &str, origin: &str) -> (u16, BTreeMap<String, String>) {
    curl(&[
        "-X",
        "OPTIONS",
        "-H",
        &format!("Origin: {origin}"),
        "-H",
        "Access-Control-Request-Method: POST",
        "-H",
        "Access-Control-Request-Headers: content-type",
        &format!("{url}/v2/models/digits/versions/1.1.0/infer"),
    ])
}

fn simple_get(url: &str, origin: &str) -> (u16, BTreeMap<String, String>) {
    curl(&[
        "-H",
        &format!("Origin: {origin}"),
        &format!("{url}/v2/health/live"),
    ])
}

/// The header's comma-separated values, lowercased.
fn listed(headers: &BTreeMap<String, String>, name: &str) -> Vec<String> {
    headers
        .get(name)
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

fn cors_headers(headers: &BTreeMap<String, String>) -> Vec<&String> {
    headers
        .keys()
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[test]
fn cors_answers_the_allowed_origins_only_and_is_off_by_default() {
    const DASH: &str = "http://dash.example";
    let listed_origins = Ward::start(
        |root| drop(install(root, &bundled("digits/1.1.0"), "digits")),
        &[(
            "WARD_CORS_ALLOWED_ORIGINS",
            "http://dash.example, http://ops.example",
        )],
    );
    let any = Ward::start(|_| {}, &[("WARD_CORS_ALLOWED_ORIGINS", "*")]);
    let off = Ward::start(|_| {}, &[]);

    // An allowed origin's preflight: the methods and headers the API uses.
    let (status, h) = preflight(&listed_origins.url, DASH);
    assert!((200..300).contains(&status), "{status} {h:?}");
    assert_eq!(
        h.get("access-control-allow-origin").map(String::as_str),
        Some(DASH),
        "{h:?}"
    );
    let methods = listed(&h, "access-control-allow-methods");
    assert!(
        methods.contains(&"post".into()) && methods.contains(&"get".into()),
        "{h:?}"
    );
    let allowed = listed(&h, "access-control-allow-headers");
    for header in [
        "content-type",
        "authorization",
        "inference-header-content-length",
    ] {
        assert!(allowed.contains(&header.into()), "{header}: {h:?}");
    }
    assert_eq!(
        h.get("access-control-max-age").map(String::as_str),
        Some("600"),
        "{h:?}"
    );
    assert!(listed(&h, "vary").contains(&"origin".into()), "{h:?}");
    let (_, h) = preflight(&listed_origins.url, "http://ops.example");
    assert_eq!(
        h.get("access-control-allow-origin").map(String::as_str),
        Some("http://ops.example"),
        "{h:?}"
    );

    // Another origin: nothing that would let the browser read the answer.
    for origin in ["http://evil.example", "http://dash.example.evil", "null"] {
        let (_, h) = preflight(&listed_origins.url, origin);
        assert_eq!(
            h.get("access-control-allow-origin"),
            None,
            "{origin}: {h:?}"
        );
        let (status, h) = simple_get(&listed_origins.url, origin);
        assert_eq!(status, 200, "{origin}");
        assert_eq!(
            h.get("access-control-allow-origin"),
            None,
            "{origin}: {h:?}"
        );
    }

    // Simple and actual requests from an allowed origin carry the header.
    let (status, h) = simple_get(&listed_origins.url, DASH);
    assert_eq!(status, 200);
    assert_eq!(
        h.get("access-control-allow-origin").map(String::as_str),
        Some(DASH),
        "{h:?}"
    );
    let exposed = listed(&h, "access-control-expose-headers");
    assert!(
        exposed.contains(&"inference-header-content-length".into())
            && exposed.contains(&"retry-after".into()),
        "{h:?}"
    );
    listed_origins.wait_state("digits", "1.1.0", "READY");
    let body = digits_body(&DIGIT_ZERO).to_string();
    let (status, h) = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Origin: {DASH}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body,
        &format!(
            "{}/v2/models/digits/versions/1.1.0/infer",
            listed_origins.url
        ),
    ]);
    assert_eq!(status, 200, "{h:?}");
    assert_eq!(
        h.get("access-control-allow-origin").map(String::as_str),
        Some(DASH),
        "{h:?}"
    );
    // An error answer too (the browser must be able to read why).
    let (status, h) = curl(&[
        "-H",
        &format!("Origin: {DASH}"),
        &format!("{}/v2/models/nope/ready", listed_origins.url),
    ]);
    assert_eq!(status, 404, "{h:?}");
    assert_eq!(
        h.get("access-control-allow-origin").map(String::as_str),
        Some(DASH),
        "{h:?}"
    );

    // `*`: any origin.
    for origin in [DASH, "http://anything.example"] {
        let (status, h) = preflight(&any.url, origin);
        assert!((200..300).contains(&status), "{status} {h:?}");
        assert_eq!(
            h.get("access-control-allow-origin").map(String::as_str),
            Some("*"),
            "{h:?}"
        );
        let (_, h) = simple_get(&any.url, origin);
        assert_eq!(
            h.get("access-control-allow-origin").map(String::as_str),
            Some("*"),
            "{h:?}"
        );
    }

    // Off (the default): no CORS header at all, whatever the request.
    let (status, h) = preflight(&off.url, DASH);
    assert!(cors_headers(&h).is_empty(), "{status} {h:?}");
    let (status, h) = simple_get(&off.url, DASH);
    assert_eq!(status, 200);
    assert!(cors_headers(&h).is_empty(), "{h:?}");
}
