//! What the capability reporter declares about the machine: its CPU, its
//! memory and, when there is one, its NVIDIA GPU (spec 003 §7.2 `hardware`).
//!
//! The GPU is read through the CUDA driver API, which `cudarc` loads at run
//! time: ward builds without CUDA and runs on machines without a GPU. Nothing
//! here may take the supervisor down or clutter its output on such a machine,
//! so the driver library is looked for first and every driver call sits
//! behind `catch_unwind`: a missing library, a missing symbol or a failing
//! call all mean "no GPU", declared as `type: "cpu"`.
//!
//! [`probe`] is slow the first time (driver initialisation can take seconds)
//! and cached after that; call it off the async threads.

use std::sync::OnceLock;

use serde::Serialize;

/// The machine, as declared to the backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hardware {
    /// `"gpu"` when a usable GPU was found, else `"cpu"`.
    pub kind: &'static str,
    pub cpu_model: String,
    /// CPUs this process may use (affinity and cgroup quotas included).
    pub cpu_cores: usize,
    pub memory_total_mb: u64,
    pub gpu: Option<GpuDevice>,
}

/// Device 0 of the CUDA driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuDevice {
    pub name: String,
    pub memory_total_mb: u64,
    /// Free device memory when probed; `None` when it could not be measured.
    pub memory_available_mb: Option<u64>,
    /// The newest CUDA version the driver supports (`"12.4"`).
    pub cuda_version: Option<String>,
}

/// The machine's hardware, probed once per process.
///
/// Blocking: the first call may initialise the CUDA driver.
pub fn probe() -> Hardware {
    static PROBED: OnceLock<Hardware> = OnceLock::new();
    PROBED.get_or_init(probe_now).clone()
}

fn probe_now() -> Hardware {
    let gpu = gpu::device0();
    Hardware {
        kind: if gpu.is_some() { "gpu" } else { "cpu" },
        cpu_model: std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| cpu_model(&text))
            .unwrap_or_else(|| std::env::consts::ARCH.to_owned()),
        cpu_cores: std::thread::available_parallelism().map_or(1, usize::from),
        memory_total_mb: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total_mb(&text))
            .unwrap_or(0),
        gpu,
    }
}

/// The CPU's name from /proc/cpuinfo. x86 says `model name`; ARM boards
/// (Jetson) often only say `Hardware` or `Model`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Hardware", "Model", "cpu model"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_owned())
            })
        })
}

/// `MemTotal` from /proc/meminfo, in MB.
pub fn mem_total_mb(meminfo: &str) -> Option<u64> {
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// `cuDriverGetVersion`'s number (`12040`) as `"12.4"`.
fn cuda_version_string(v: i32) -> Option<String> {
    (v > 0).then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
}

fn bytes_to_mb(bytes: usize) -> u64 {
    u64::try_from(bytes).unwrap_or(u64::MAX) / (1024 * 1024)
}

mod gpu {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use cudarc::driver::{result, sys};

    use super::{GpuDevice, bytes_to_mb, cuda_version_string};

    /// Every driver function [`query`] calls. cudarc looks each one up on
    /// its first call and panics if it is missing, so they are looked up here
    /// first, quietly.
    const SYMBOLS: [&str; 10] = [
        "cuInit",
        "cuDeviceGetCount",
        "cuDeviceGet",
        "cuDeviceGetName",
        "cuDeviceTotalMem_v2",
        "cuDriverGetVersion",
        "cuDevicePrimaryCtxRetain",
        "cuCtxSetCurrent",
        "cuMemGetInfo_v2",
        "cuDevicePrimaryCtxRelease_v2",
    ];

    /// Why there is no GPU to declare.
    #[derive(Debug, thiserror::Error)]
    enum NoGpu {
        #[error("the CUDA driver has no {0}")]
        MissingSymbol(&'static str),
        #[error("the CUDA driver sees no device")]
        NoDevice,
        // The code's name, not `DriverError`'s `Display`: that calls back
        // into the driver, outside the panic guard.
        #[error("CUDA driver call failed: {0:?}")]
        Driver(sys::CUresult),
    }

    impl From<result::DriverError> for NoGpu {
        fn from(e: result::DriverError) -> Self {
            NoGpu::Driver(e.0)
        }
    }

    /// Device 0, or `None` when there is no driver, no device, or anything
    /// about the driver misbehaves.
    pub(super) fn device0() -> Option<GpuDevice> {
        // SAFETY: opening libcuda runs its initialisers, which is what loading
        // the NVIDIA driver library is meant to do; the handle is dropped at
        // once. Without this check, cudarc panics on the first driver call.
        if !unsafe { sys::is_culib_present() } {
            return None;
        }
        // The symbol check makes a panic unlikely; should cudarc panic all
        // the same, nothing of ours is left half-updated.
        match catch_unwind(AssertUnwindSafe(|| {
            check_symbols()?;
            query()
        })) {
            Ok(Ok(gpu)) => Some(gpu),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "no GPU to declare");
                None
            }
            Err(_) => {
                tracing::warn!("the CUDA driver library misbehaved; declaring no GPU");
                None
            }
        }
    }

    fn check_symbols() -> Result<(), NoGpu> {
        // SAFETY: `is_culib_present` just opened one of the same candidates,
        // so this opens (and keeps) the driver library instead of panicking.
        let lib = unsafe { sys::culib() };
        for name in SYMBOLS {
            // SAFETY: the symbol is only looked up, never called through
            // this type.
            if unsafe { lib.get::<unsafe extern "C" fn()>(name.as_bytes()) }.is_err() {
                return Err(NoGpu::MissingSymbol(name));
            }
        }
        Ok(())
    }

    fn query() -> Result<GpuDevice, NoGpu> {
        result::init()?;
        if result::device::get_count()? < 1 {
            return Err(NoGpu::NoDevice);
        }
        let dev = result::device::get(0)?;
        let name = result::device::get_name(dev)?;
        // SAFETY: `dev` was returned by `device::get`.
        let total = unsafe { result::device::total_mem(dev) }?;
        let mut version = 0;
        // SAFETY: the pointer is to a live, writable i32.
        let cuda_version = unsafe { sys::cuDriverGetVersion(&mut version) }
            .result()
            .ok()
            .and_then(|()| cuda_version_string(version));
        Ok(GpuDevice {
            name,
            memory_total_mb: bytes_to_mb(total),
            memory_available_mb: free_memory(dev).map(bytes_to_mb),
            cuda_version,
        })
    }

    /// Free device memory. The driver answers this only inside a context, so
    /// the primary context is held just long enough to ask, then released:
    /// the supervisor must not keep device memory that workers need.
    fn free_memory(dev: sys::CUdevice) -> Option<usize> {
        // SAFETY: `dev` was returned by `device::get`; the context is made
        // current on this thread only, unset before it is released, and
        // released exactly once after a successful retain.
        unsafe {
            let ctx = result::primary_ctx::retain(dev).ok()?;
            let free = result::ctx::set_current(ctx)
                .and_then(|()| result::mem_get_info())
                .map(|(free, _total)| free)
                .ok();
            let _ = result::ctx::set_current(std::ptr::null_mut());
            let _ = result::primary_ctx::release(dev);
            free
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_model_on_x86_and_arm() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(x86).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        let arm = "processor\t: 0\nBogoMIPS\t: 62.50\n\nHardware\t: NVIDIA Jetson Orin\n";
        assert_eq!(cpu_model(arm).as_deref(), Some("NVIDIA Jetson Orin"));
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }

    #[test]
    fn reads_mem_total() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_mb(meminfo), Some(24_000));
        assert_eq!(mem_total_mb("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn formats_driver_cuda_version() {
        assert_eq!(cuda_version_string(12040).as_deref(), Some("12.4"));
        assert_eq!(cuda_version_string(11080).as_deref(), Some("11.8"));
        assert_eq!(cuda_version_string(13000).as_deref(), Some("13.0"));
        assert_eq!(cuda_version_string(0), None);
    }

    /// The build machines have no GPU and no NVIDIA driver: the probe must
    /// say "cpu" there (and not panic). On a GPU machine it must agree with
    /// itself.
    #[test]
    fn probe_is_consistent_and_cached() {
        let hw = probe();
        assert_eq!(hw.kind == "gpu", hw.gpu.is_some());
        assert!(hw.cpu_cores >= 1);
        assert!(!hw.cpu_model.is_empty());
        assert!(hw.memory_total_mb > 0);
        if !std::path::Path::new("/proc/driver/nvidia").exists() {
            assert_eq!(hw.kind, "cpu");
            assert_eq!(hw.gpu, None);
        }
        assert_eq!(probe(), hw);
    }
}
