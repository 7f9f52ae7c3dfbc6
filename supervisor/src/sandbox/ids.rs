//! Stable identifiers derived from names: the per-model uid of a confined
//! worker, and digests that tell supervisors and worker binaries apart.

/// FNV-1a, 64 bits: stable across runs and platforms, not a security hash.
pub fn fnv64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The uid (and gid) a confined worker of `model@version` runs as: one per
/// model version, in `base .. base + 60000`, the same on every run, outside
/// the range of ordinary users, so that RLIMIT_NPROC counts only this
/// plugin's processes.
pub fn plugin_id(base: u32, model: &str, version: &str) -> u32 {
    let h = fnv64(model.bytes().chain([b'@']).chain(version.bytes()));
    base + (h % 60_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_ids_are_stable_and_in_range() {
        let a = plugin_id(200_000, "digits", "1.0.0");
        assert_eq!(a, plugin_id(200_000, "digits", "1.0.0"));
        assert_ne!(a, plugin_id(200_000, "digits", "1.1.0"));
        assert!((200_000..260_000).contains(&a));
    }

    #[test]
    fn fnv64_matches_the_reference_vectors() {
        assert_eq!(fnv64(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(*b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
