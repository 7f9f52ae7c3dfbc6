//! The capability declaration of spec 003 §7.2: what this runtime can do —
//! its hardware, its capacity and the health of every model it has loaded
//! or failed to keep loaded.
//!
//! [`declaration`] builds the JSON from a snapshot of the supervisor; the
//! arithmetic lives in the pure [`build`] so that Appendix B's aggregation
//! rules are tested without workers. The reporter
//! ([`super::reporter`]) posts it; `GET /v1/capabilities` serves it.

use serde_json::{Value, json};

use crate::host::hardware::Hardware;
use crate::registry::supervisor::Supervisor;
use crate::time::{now_ms, rfc3339_ms};
use crate::version::handle::VersionHandle;
use crate::version::health::{self, Health};
use crate::version::lifecycle::LifecycleState;

/// The schema version of every model's structured output, as declared.
pub const OUTPUT_SCHEMA_VERSION: &str = "1.0";

/// Spec 003 Appendix B: at most this many concurrent streams are advertised.
const MAX_STREAMS: u64 = 10;

/// Appendix B's heuristic: one stream per this many frames per second.
const FPS_PER_STREAM: u64 = 10;

/// One model version, as the declaration sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    pub model_id: String,
    pub version: String,
    pub state: LifecycleState,
    pub health: Health,
    /// Why the version is in ERROR or FAILED.
    pub reason: Option<String>,
    /// Unix time in milliseconds of the last state change.
    pub since_ms: u64,
    /// `frame`, `batch` or `temporal`; `None` when no contract was loaded.
    pub input_type: Option<&'static str>,
    /// Measured by ward over successful requests; `None` without samples.
    pub avg_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// From the contract's `performance` section.
    pub recommended_fps: Option<f64>,
    pub recommended_batch_size: Option<u32>,
    /// Requests sent to the worker and not yet answered.
    pub in_flight: usize,
}

/// Everything a declaration is made of, taken at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    pub runtime_id: &'a str,
    /// Unix time in milliseconds.
    pub now_ms: u64,
    /// Requests one version may have in its worker at once.
    pub max_in_flight: u32,
    pub hardware: &'a Hardware,
    /// Every version; those not READY, ERROR or FAILED are left out.
    pub rows: &'a [ModelRow],
}

/// The capability declaration of spec 003 §7.2, as of now.
pub fn declaration(sup: &Supervisor, hw: &Hardware) -> Value {
    let rows = rows(sup);
    build(&Snapshot {
        runtime_id: &sup.cfg.registration.runtime_id,
        now_ms: now_ms(),
        max_in_flight: sup.cfg.queue.max_in_flight,
        hardware: hw,
        rows: &rows,
    })
}

/// A row for each version the declaration lists.
pub fn rows(sup: &Supervisor) -> Vec<ModelRow> {
    sup.versions()
        .iter()
        .map(|h| row(h))
        .filter(|r| is_listed(r.state))
        .collect()
}

/// One version, as the declaration (and the AIRuntime's GetModelStatus)
/// sees it.
pub fn row(handle: &VersionHandle) -> ModelRow {
    let (status, report) = handle.status();
    let contract = handle.contract.as_deref();
    ModelRow {
        model_id: status.model_id,
        version: status.version,
        state: status.state,
        health: report.health,
        reason: status.reason,
        since_ms: status.since_ms,
        input_type: contract.map(|c| c.input.kind.as_str()),
        avg_ms: report.avg_ms,
        p99_ms: report.p99_ms,
        recommended_fps: contract.and_then(|c| c.performance.recommended_fps),
        recommended_batch_size: contract.map(|c| c.performance.recommended_batch_size),
        in_flight: status.in_flight,
    }
}

/// A version's health as reported: one that is not serving is UNHEALTHY
/// whatever its window says (spec 003 §7.4: "OR in ERROR state").
pub fn reported_health(r: &ModelRow) -> Health {
    if r.state == LifecycleState::Ready {
        r.health
    } else {
        Health::Unhealthy
    }
}

/// The declaration's `health_summary` (spec 003 §7.2, §7.4).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The worst health among the listed versions (Appendix B).
    pub status: Health,
    pub total: usize,
    pub healthy: usize,
    pub degraded: usize,
    pub unhealthy: usize,
    /// "model@version: reason at time" of the latest failure.
    pub last_error: Option<String>,
}

/// Summarises the listed rows.
pub fn summarize(rows: &[ModelRow]) -> Summary {
    let listed: Vec<&ModelRow> = rows.iter().filter(|r| is_listed(r.state)).collect();
    let count = |h: Health| listed.iter().filter(|r| reported_health(r) == h).count();
    let last_error = listed
        .iter()
        .filter(|r| matches!(r.state, LifecycleState::Error | LifecycleState::Failed))
        .max_by_key(|r| r.since_ms)
        .map(|r| {
            format!(
                "{}@{}: {} at {}",
                r.model_id,
                r.version,
                r.reason.as_deref().unwrap_or(r.state.as_str()),
                rfc3339_ms(r.since_ms)
            )
        });
    Summary {
        status: health::aggregate(listed.iter().map(|r| (r.state, reported_health(r)))),
        total: listed.len(),
        healthy: count(Health::Healthy),
        degraded: count(Health::Degraded),
        unhealthy: count(Health::Unhealthy),
        last_error,
    }
}

/// READY versions serve; ERROR and FAILED ones are listed so that the
/// backend sees what is unhealthy. The rest (being validated, loaded or
/// unloaded, or invalid) are not the backend's business.
fn is_listed(state: LifecycleState) -> bool {
    matches!(
        state,
        LifecycleState::Ready | LifecycleState::Error | LifecycleState::Failed
    )
}

/// What one version can sustain: measured when requests have been served,
/// else what its contract recommends, else unknown.
pub fn fps_capacity(row: &ModelRow) -> Option<u64> {
    let measured = row
        .avg_ms
        .filter(|avg| avg.is_finite() && *avg > 0.0)
        .map(|avg| 1000.0 / avg);
    let fps = measured.or(row
        .recommended_fps
        .filter(|fps| fps.is_finite() && *fps >= 0.0))?;
    // `as` saturates, and the value is finite and non-negative.
    Some(fps.floor() as u64)
}

/// Milliseconds as reported: two decimals are plenty for scheduling.
pub fn round_ms(ms: Option<f64>) -> Option<f64> {
    ms.filter(|v| v.is_finite())
        .map(|v| (v * 100.0).round() / 100.0)
}

/// The declaration from a snapshot: pure, so that the aggregation rules of
/// Appendix B are testable on their own.
pub fn build(s: &Snapshot<'_>) -> Value {
    let listed: Vec<&ModelRow> = s.rows.iter().filter(|r| is_listed(r.state)).collect();
    let health_of = |r: &ModelRow| reported_health(r);
    let ready: Vec<&ModelRow> = listed
        .iter()
        .copied()
        .filter(|r| r.state == LifecycleState::Ready)
        .collect();

    let max_fps_total: u64 = ready.iter().filter_map(|r| fps_capacity(r)).sum();
    let max_concurrent_streams = MAX_STREAMS.min(max_fps_total / FPS_PER_STREAM);
    let recommended_batch_size = ready
        .iter()
        .filter_map(|r| r.recommended_batch_size)
        .max()
        .unwrap_or(1)
        .max(1);
    let capacity_slots = ready.len() as u64 * u64::from(s.max_in_flight.max(1));
    let in_flight: u64 = ready.iter().map(|r| r.in_flight as u64).sum();
    let utilization = (in_flight * 100 + capacity_slots / 2)
        .checked_div(capacity_slots)
        .map_or(0, |pct| pct.min(100));

    let models: Vec<Value> = listed
        .iter()
        .map(|r| {
            json!({
                "model_id": r.model_id,
                "version": r.version,
                "state": r.state.as_str(),
                "health": health_of(r).as_str(),
                "input_type": r.input_type,
                "output_schema_version": OUTPUT_SCHEMA_VERSION,
                "performance": {
                    "avg_inference_time_ms": round_ms(r.avg_ms),
                    "p99_inference_time_ms": round_ms(r.p99_ms),
                    "fps_capacity": fps_capacity(r),
                },
            })
        })
        .collect();

    let summary = summarize(s.rows);

    let hw = s.hardware;
    let gpu = hw.gpu.as_ref();
    json!({
        "runtime_id": s.runtime_id,
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": rfc3339_ms(s.now_ms),
        "hardware": {
            "type": hw.kind,
            "supports_gpu": gpu.is_some(),
            "gpu_name": gpu.map(|g| &g.name),
            "gpu_memory_total_mb": gpu.map(|g| g.memory_total_mb),
            "gpu_memory_available_mb": gpu.and_then(|g| g.memory_available_mb),
            "cuda_version": gpu.and_then(|g| g.cuda_version.as_deref()),
            "cpu_model": hw.cpu_model,
            "cpu_cores": hw.cpu_cores,
            "memory_total_mb": hw.memory_total_mb,
        },
        "capacity": {
            "max_fps_total": max_fps_total,
            "max_concurrent_streams": max_concurrent_streams,
            "recommended_batch_size": recommended_batch_size,
            "current_utilization_percent": utilization,
        },
        "models": models,
        "health_summary": {
            "status": summary.status.as_str().to_ascii_lowercase(),
            "total_models": summary.total,
            "healthy_models": summary.healthy,
            "degraded_models": summary.degraded,
            "unhealthy_models": summary.unhealthy,
            "last_error": summary.last_error,
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::host::hardware::GpuDevice;

    /// A CPU-only host, for declarations in tests.
    pub(crate) fn cpu() -> Hardware {
        Hardware {
            kind: "cpu",
            cpu_model: "Test CPU".to_owned(),
            cpu_cores: 8,
            memory_total_mb: 16_000,
            gpu: None,
        }
    }

    fn row(model: &str, state: LifecycleState, health: Health) -> ModelRow {
        ModelRow {
            model_id: model.to_owned(),
            version: "1.0.0".to_owned(),
            state,
            health,
            reason: None,
            since_ms: 1_768_384_800_000,
            input_type: Some("frame"),
            avg_ms: None,
            p99_ms: None,
            recommended_fps: None,
            recommended_batch_size: Some(1),
            in_flight: 0,
        }
    }

    fn snapshot<'a>(hw: &'a Hardware, rows: &'a [ModelRow]) -> Snapshot<'a> {
        Snapshot {
            runtime_id: "ai-runtime-001",
            now_ms: 1_768_384_800_000,
            max_in_flight: 4,
            hardware: hw,
            rows,
        }
    }

    #[test]
    fn capacity_follows_appendix_b() {
        let hw = cpu();
        let mut fast = row("fall_detection", LifecycleState::Ready, Health::Healthy);
        fast.avg_ms = Some(20.0); // 50 fps
        fast.p99_ms = Some(35.123);
        fast.in_flight = 3;
        fast.recommended_batch_size = Some(4);
        let mut slow = row("helmet_detection", LifecycleState::Ready, Health::Degraded);
        slow.avg_ms = Some(33.0); // 30.3 fps → 30
        slow.in_flight = 1;
        let mut fresh = row("smoke", LifecycleState::Ready, Health::Healthy);
        fresh.recommended_fps = Some(25.9); // no samples yet → 25
        let mut broken = row("ocr", LifecycleState::Error, Health::Unhealthy);
        broken.avg_ms = Some(1.0); // measured before it broke: not capacity
        let loading = row("later", LifecycleState::Loading, Health::Unhealthy);
        let rows = [fast, slow, fresh, broken, loading];
        let v = build(&snapshot(&hw, &rows));

        let cap = &v["capacity"];
        assert_eq!(cap["max_fps_total"], 105);
        assert_eq!(cap["max_concurrent_streams"], 10);
        assert_eq!(cap["recommended_batch_size"], 4);
        // 4 in flight of 3 READY × 4 slots.
        assert_eq!(cap["current_utilization_percent"], 33);

        let models = v["models"].as_array().expect("models is an array");
        assert_eq!(models.len(), 4, "LOADING is not listed");
        assert_eq!(models[0]["performance"]["fps_capacity"], 50);
        assert_eq!(models[0]["performance"]["p99_inference_time_ms"], 35.12);
        assert_eq!(models[1]["health"], "DEGRADED");
        assert_eq!(models[2]["performance"]["fps_capacity"], 25);
        assert_eq!(
            models[2]["performance"]["avg_inference_time_ms"],
            Value::Null
        );
        assert_eq!(models[3]["state"], "ERROR");
        assert_eq!(models[3]["health"], "UNHEALTHY");
        assert_eq!(models[3]["output_schema_version"], "1.0");

        let summary = &v["health_summary"];
        assert_eq!(summary["status"], "degraded");
        assert_eq!(summary["total_models"], 4);
        assert_eq!(summary["healthy_models"], 2);
        assert_eq!(summary["degraded_models"], 1);
        assert_eq!(summary["unhealthy_models"], 1);
    }

    #[test]
    fn streams_are_a_tenth_of_the_fps_below_the_cap() {
        let hw = cpu();
        let mut one = row("a", LifecycleState::Ready, Health::Healthy);
        one.avg_ms = Some(1000.0 / 39.0);
        let v = build(&snapshot(&hw, std::slice::from_ref(&one)));
        assert_eq!(v["capacity"]["max_fps_total"], 39);
        assert_eq!(v["capacity"]["max_concurrent_streams"], 3);
    }

    #[test]
    fn empty_runtime_is_unhealthy_with_nulls() {
        let hw = cpu();
        let v = build(&snapshot(&hw, &[]));
        assert_eq!(v["runtime_id"], "ai-runtime-001");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["timestamp"], "2026-01-14T10:00:00.000Z");
        let hardware = &v["hardware"];
        assert_eq!(hardware["type"], "cpu");
        assert_eq!(hardware["supports_gpu"], false);
        for key in [
            "gpu_name",
            "gpu_memory_total_mb",
            "gpu_memory_available_mb",
            "cuda_version",
        ] {
            assert_eq!(hardware[key], Value::Null, "{key}");
        }
        assert_eq!(hardware["cpu_cores"], 8);
        assert_eq!(
            v["capacity"],
            json!({
                "max_fps_total": 0,
                "max_concurrent_streams": 0,
                "recommended_batch_size": 1,
                "current_utilization_percent": 0,
            })
        );
        assert_eq!(v["models"], json!([]));
        assert_eq!(v["health_summary"]["status"], "unhealthy");
        assert_eq!(v["health_summary"]["last_error"], Value::Null);
    }

    #[test]
    fn declares_the_gpu() {
        let hw = Hardware {
            kind: "gpu",
            gpu: Some(GpuDevice {
                name: "NVIDIA Tesla T4".to_owned(),
                memory_total_mb: 16_384,
                memory_available_mb: None,
                cuda_version: Some("12.1".to_owned()),
            }),
            ..cpu()
        };
        let v = build(&snapshot(&hw, &[]));
        assert_eq!(v["hardware"]["type"], "gpu");
        assert_eq!(v["hardware"]["supports_gpu"], true);
        assert_eq!(v["hardware"]["gpu_name"], "NVIDIA Tesla T4");
        assert_eq!(v["hardware"]["gpu_memory_total_mb"], 16_384);
        assert_eq!(v["hardware"]["gpu_memory_available_mb"], Value::Null);
        assert_eq!(v["hardware"]["cuda_version"], "12.1");
    }

    #[test]
    fn last_error_is_the_most_recent_failure() {
        let hw = cpu();
        let mut old = row("a", LifecycleState::Failed, Health::Unhealthy);
        old.reason = Some("load timeout".to_owned());
        old.since_ms = 1_000;
        let mut recent = row("b", LifecycleState::Error, Health::Unhealthy);
        recent.reason = Some("inference timeout".to_owned());
        recent.since_ms = 1_768_384_935_000;
        let mut no_reason = row("c", LifecycleState::Error, Health::Unhealthy);
        no_reason.since_ms = 5_000;
        let ok = row("d", LifecycleState::Ready, Health::Healthy);
        let v = build(&snapshot(&hw, &[old, recent, no_reason, ok]));
        assert_eq!(
            v["health_summary"]["last_error"],
            "b@1.0.0: inference timeout at 2026-01-14T10:02:15.000Z"
        );
        assert_eq!(v["health_summary"]["status"], "degraded");

        let mut only = row("c", LifecycleState::Error, Health::Unhealthy);
        only.since_ms = 0;
        let v = build(&snapshot(&hw, &[only]));
        assert_eq!(
            v["health_summary"]["last_error"],
            "c@1.0.0: ERROR at 1970-01-01T00:00:00.000Z"
        );
        assert_eq!(v["health_summary"]["status"], "unhealthy");
        assert_eq!(v["capacity"]["current_utilization_percent"], 0);
    }
}
