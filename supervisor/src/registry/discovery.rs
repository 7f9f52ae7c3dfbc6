//! Finding model versions on disk (spec 003 §3.3).
//!
//! A model root holds `<model_id>/<version>/model.yaml`. Symlinks are followed
//! (so deployments can swap directories atomically). Directories whose name is
//! not a semantic version are enumerated too when they hold a `model.yaml`, so
//! that a misnamed version shows up as INVALID instead of vanishing.

use std::io;
use std::path::{Path, PathBuf};

use ward_config::model::CONTRACT_FILE;

/// One `<model_id>/<version>/` directory found under the model root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    /// Directory names, as found (validation checks them against model.yaml).
    pub model_dir: String,
    pub version_dir: String,
    pub path: PathBuf,
}

/// Lists every version directory under `root`, sorted by model then version.
///
/// Unreadable entries are skipped: one broken model directory must not hide
/// the others. Only an unreadable root is an error.
pub fn scan(root: &Path) -> io::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for model in std::fs::read_dir(root)? {
        let Ok(model) = model else { continue };
        let model_path = model.path();
        let (Some(model_dir), true) = (utf8_name(&model_path), model_path.is_dir()) else {
            continue;
        };
        if model_dir.starts_with('.') {
            continue;
        }
        let Ok(versions) = std::fs::read_dir(&model_path) else {
            continue;
        };
        for version in versions.flatten() {
            let path = version.path();
            let Some(version_dir) = utf8_name(&path) else {
                continue;
            };
            let looks_like_version = semver::Version::parse(&version_dir).is_ok();
            if path.is_dir() && (looks_like_version || path.join(CONTRACT_FILE).exists()) {
                out.push(Candidate {
                    model_dir: model_dir.clone(),
                    version_dir,
                    path,
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

fn utf8_name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_versions_follows_symlinks_and_ignores_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "a/1.0.0",
            "a/2.0.0",
            "b/0.1.0",
            "a/notes",
            "c/misnamed",
            ".hidden/1.0.0",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("c/misnamed/model.yaml"), "").unwrap();
        std::fs::write(r.join("README"), "").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(elsewhere.path().join("3.0.0")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), r.join("linked")).unwrap();

        let found: Vec<_> = scan(r)
            .unwrap()
            .into_iter()
            .map(|c| format!("{}/{}", c.model_dir, c.version_dir))
            .collect();
        assert_eq!(
            found,
            [
                "a/1.0.0",
                "a/2.0.0",
                "b/0.1.0",
                "c/misnamed",
                "linked/3.0.0"
            ]
        );
    }

    #[test]
    fn a_missing_root_is_an_error() {
        assert!(scan(Path::new("/nonexistent/ward/models")).is_err());
    }
}
