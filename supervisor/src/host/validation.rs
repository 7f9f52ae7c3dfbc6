//! What the supervisor knows about the host it runs on.

use ward_config::{GpuInfo, HostInfo};

/// Probes the host for what model validation needs: an NVIDIA GPU (from the
/// driver's /proc entries, which exist exactly when the kernel driver is
/// loaded) and whether this is a Jetson board.
pub fn probe() -> HostInfo {
    HostInfo {
        gpu: nvidia_gpu(),
        jetson: std::path::Path::new("/etc/nv_tegra_release").exists(),
    }
}

fn nvidia_gpu() -> Option<GpuInfo> {
    let gpus = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?;
    let first = gpus.flatten().next()?;
    let info = std::fs::read_to_string(first.path().join("information")).unwrap_or_default();
    let name = info
        .lines()
        .find_map(|l| l.strip_prefix("Model:"))
        .map_or_else(|| "NVIDIA GPU".to_owned(), |m| m.trim().to_owned());
    Some(GpuInfo {
        name,
        memory_mb: None,
    })
}
