//! Floods against a real `ward serve` (issue 12, points 7 and 9): request
//! bodies in flight stay under `server.max_body_bytes_in_flight` (a body that
//! would pass it is refused before it is read), OVERLOADED answers say when
//! to retry from the queue and the model's speed, and failed requests are
//! logged once each — with their ids — but never more than the rate limit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{Ward, action_body, install, misbehave};

/// The bound the body tests run under: 1.5 MiB in flight, 1 MiB per body.
const IN_FLIGHT: u64 = 1_572_864;
const BODY_LIMIT: u64 = 1 << 20;
/// A large body: most of the per-body limit, so two never fit together.
const LARGE: usize = 1_000_000;

const INFER: &str = "/v2/models/misbehave/versions/1.0.0/infer";

fn start(env: &[(&str, &str)]) -> Ward {
    let ward = Ward::start(|root| drop(install(root, &misbehave(), "misbehave")), env);
    ward.wait_state("misbehave", "1.0.0", "READY");
    ward
}

/// An echo request padded with spaces (JSON allows them) to `len` bytes.
fn padded_echo(len: usize) -> Vec<u8> {
    let mut body = action_body(0, 1.0).to_string().into_bytes();
    assert!(body.len() <= len);
    body.resize(len, b' ');
    body
}

/// A connection that has sent a request's head, and maybe part of its body.
struct Upload {
    stream: TcpStream,
}

impl Upload {
    fn begin(ward: &Ward, path: &str, headers: &[(&str, &str)]) -> Upload {
        let addr = ward.url.strip_prefix("http://").unwrap();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        Upload { stream }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads the whole answer: status, headers (lowercase names), JSON body.
    fn answer(mut self) -> (u16, Vec<(String, String)>, Value) {
        let mut out = Vec::new();
        self.stream.read_to_end(&mut out).unwrap();
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&out)));
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let body = serde_json::from_slice(&out[split + 4..]).unwrap_or(Value::Null);
        (status.parse().unwrap(), headers, body)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One sample of /metrics (no labels, or exactly these label pairs inline).
fn metric(ward: &Ward, series: &str) -> f64 {
    let (code, text) = ward.get("/metrics");
    assert_eq!(code, 200);
    let text = text.as_str().unwrap().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

/// Polls `/metrics` until `series` reads `want`; panics after 10 s.
fn wait_metric(ward: &Ward, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = metric(ward, series);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed {got}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_overloaded(status: u16, headers: &[(String, String)], body: &Value) {
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "OVERLOADED", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes_in_flight"),
        "{body}"
    );
    let retry: u64 = header(headers, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
}

#[test]
fn large_bodies_past_the_bound_are_refused_unread_and_capacity_returns() {
    let ward = start(&[
        ("WARD_BODY_LIMIT_BYTES", &BODY_LIMIT.to_string()),
        ("WARD_MAX_BODY_BYTES_IN_FLIGHT", &IN_FLIGHT.to_string()),
    ]);
    assert_eq!(
        metric(&ward, "ward_body_bytes_in_flight_limit"),
        IN_FLIGHT as f64
    );
    let large = padded_echo(LARGE);
    let length = LARGE.to_string();

    // A slow upload holds its declared length from its head on.
    let mut holder = Upload::begin(&ward, INFER, &[("Content-Length", &length)]);
    holder.send(&large[..1_000]);
    wait_metric(&ward, "ward_body_bytes_in_flight", LARGE as f64);

    // A second large body does not fit: refused with nothing of it sent,
    // so the server cannot have read it.
    let refused = Upload::begin(&ward, INFER, &[("Content-Length", &length)]);
    let (status, headers, body) = refused.answer();
    assert_overloaded(status, &headers, &body);

    // A chunked body is counted as it arrives: refused at the byte that
    // passes the bound (and nothing is sent past that byte).
    let room = (IN_FLIGHT - LARGE as u64) as usize;
    let mut chunked = Upload::begin(&ward, INFER, &[("Transfer-Encoding", "chunked")]);
    let mut chunk = format!("{:x}\r\n", room + 1).into_bytes();
    chunk.extend(std::iter::repeat_n(b' ', room + 1));
    chunked.send(&chunk);
    let (status, headers, body) = chunked.answer();
    assert_overloaded(status, &headers, &body);

    // A small request still fits beside the holder.
    let (code, body) = ward.post(INFER, &action_body(0, 7.0));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        metric(
            &ward,
            "ward_overload_rejections_total{reason=\"body_bytes_in_flight\"}"
        ),
        2.0
    );

    // The holder finishes and is served; its bytes are given back...
    holder.send(&large[1_000..]);
    let (status, _, body) = holder.answer();
    assert_eq!(status, 200, "{body}");
    wait_metric(&ward, "ward_body_bytes_in_flight", 0.0);

    // ...so a large body is served again, and so is a chunked one.
    let mut again = Upload::begin(&ward, INFER, &[("Content-Length", &length)]);
    again.send(&large);
    let (status, _, body) = again.answer();
    assert_eq!(status, 200, "{body}");
    let mut chunked = Upload::begin(&ward, INFER, &[("Transfer-Encoding", "chunked")]);
    let mut body = Vec::new();
    for part in large.chunks(300_000) {
        body.extend(format!("{:x}\r\n", part.len()).into_bytes());
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    chunked.send(&body);
    let (status, _, body) = chunked.answer();
    assert_eq!(status, 200, "{body}");
    wait_metric(&ward, "ward_body_bytes_in_flight", 0.0);
}

#[test]
fn a_full_queue_says_when_to_retry_from_its_depth_and_latency() {
    // One request at a time and one waiting: the third in line is refused.
    let ward = start(&[("WARD_MAX_IN_FLIGHT", "1"), ("WARD_MAX_QUEUE", "1")]);
    // The model's recent latency: 600 ms a request.
    let (code, body) = ward.post(INFER, &action_body(9, 600.0));
    assert_eq!(code, 200, "{body}");
    // Three 700 ms requests: one running, two in the channel.
    let busy: Vec<_> = (0..3)
        .map(|_| {
            let url = ward.url.clone();
            std::thread::spawn(move || {
                ureq::post(format!("{url}{INFER}"))
                    .config()
                    .http_status_as_error(false)
                    .build()
                    .send(action_body(9, 700.0).to_string())
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    ward.wait_for("misbehave", "1.0.0", Duration::from_secs(10), |s| {
        s["in_flight"] == 1 && s["queued"] == 2
    });
    let addr = ward.url.strip_prefix("http://").unwrap().to_owned();
    let body = action_body(0, 1.0).to_string();
    let mut refused = Upload::begin(&ward, INFER, &[("Content-Length", &body.len().to_string())]);
    refused.send(body.as_bytes());
    let (status, headers, body) = refused.answer();
    assert_eq!(status, 503, "{body} ({addr})");
    assert_eq!(body["code"], "OVERLOADED");
    // ceil(3 requests ahead × ~0.6 s / 1 slot) = 2 s (3 with overheads),
    // not the constant 1 of old.
    let retry: u64 = header(&headers, "retry-after").unwrap().parse().unwrap();
    assert!((2..=3).contains(&retry), "Retry-After {retry}");
    assert!(body["request_id"].is_string(), "{body}");
    for t in busy {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(
        metric(
            &ward,
            "ward_overload_rejections_total{reason=\"queue_full\"}"
        ),
        1.0
    );
}

/// ward's stderr without terminal colour codes.
fn log_text(ward: &Ward) -> String {
    let raw = ward.stderr();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn failure_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("inference request failed"))
        .collect()
}

/// Waits for a log line containing every one of `parts`.
fn wait_line(ward: &Ward, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = log_text(ward);
        if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {parts:?} in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn failed_requests_are_logged_with_their_ids_and_floods_stay_bounded() {
    let ward = start(&[]);
    // The client's id is the request id in the answer and in the log.
    let mut req = action_body(1, 1.0);
    req["id"] = json!("req-42");
    let (code, body) = ward.post(INFER, &req);
    assert_eq!(
        (code, &body["code"]),
        (502, &json!("MODEL_ERROR")),
        "{body}"
    );
    assert_eq!(body["request_id"], "req-42");
    let line = wait_line(&ward, &["inference request failed", "request_id=req-42"]);
    for field in [
        "model=\"misbehave\"",
        "version=\"1.0.0\"",
        "code=MODEL_ERROR",
        "latency_ms=",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }

    // Without an id, ward makes one up and answers with it.
    let (code, body) = ward.post(INFER, &action_body(1, 1.0));
    assert_eq!(code, 502);
    let made_up = body["request_id"].as_str().unwrap().to_owned();
    wait_line(
        &ward,
        &["inference request failed", &format!("request_id={made_up}")],
    );

    // The frame route names the frame and the camera.
    let resp = ureq::post(format!(
        "{}/v1/models/misbehave/versions/1.0.0/frame?frame_id=f-7&camera_id=cam-3",
        ward.url
    ))
    .config()
    .http_status_as_error(false)
    .build()
    .header("Content-Type", "image/png")
    .send(&b"\x89PNG"[..])
    .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let line = wait_line(&ward, &["inference request failed", "frame_id=\"f-7\""]);
    assert!(line.contains("camera_id=\"cam-3\""), "{line}");
    assert!(line.contains("code=INVALID_INPUT"), "{line}");

    // A flood of failures: every one answered, few logged.
    let before = failure_lines(&log_text(&ward)).len();
    let started = Instant::now();
    const FLOOD: usize = 400;
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = ward.url.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                for _ in 0..FLOOD / 8 {
                    let status = agent
                        .post(format!("{url}{INFER}"))
                        .send(action_body(1, 1.0).to_string())
                        .unwrap()
                        .status()
                        .as_u16();
                    assert_eq!(status, 502);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let logged = failure_lines(&log_text(&ward)).len() - before;
    // The burst (minus the three lines above) plus the rate over the flood.
    let bound = ward_supervisor::api::failure_log::BURST as f64
        + f64::from(ward_supervisor::api::failure_log::LINES_PER_SECOND) * (elapsed + 1.0);
    assert!(
        (logged as f64) <= bound && logged < FLOOD / 4,
        "{logged} failure lines for {FLOOD} failures in {elapsed:.2}s (bound {bound})"
    );
    // Once the bucket refills, the next failure is preceded by the count of
    // the lines held back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = ward.post(INFER, &action_body(1, 1.0));
        assert_eq!(code, 502);
        if log_text(&ward).contains("suppressed") {
            break;
        }
        assert!(Instant::now() < deadline, "no suppression summary");
        std::thread::sleep(Duration::from_millis(50));
    }
    let summary = wait_line(&ward, &["suppressed", "similar lines"]);
    assert!(summary.contains("model=\"misbehave\""), "{summary}");
}
