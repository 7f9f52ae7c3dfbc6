//! Command-line entry point of the `ward` binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ward_config::model::CONTRACT_FILE;
use ward_config::{HostInfo, validate_version_dir};

use crate::discovery;

const USAGE: &str = "\
ward — a model-serving supervisor for untrusted model plugins

Usage:
  ward serve [--config FILE]
                         serve the models under the model root (config from FILE,
                         WARD_CONFIG, or defaults; WARD_* variables override fields)
  ward validate [PATH]   check model.yaml contracts: a model root (default: models)
                         or one <model_id>/<version> directory
  ward help              this text
  ward version           print the version

Exit status of validate: 0 all valid, 1 any invalid, 2 usage or I/O error.
";

/// Exit status for a usage error.
const USAGE_ERROR: u8 = 2;

/// Runs the command line in `std::env::args`.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    run(&args)
}

/// Runs one command line (without the program name).
pub fn run(args: &[String]) -> ExitCode {
    let mut args = args.iter().map(String::as_str);
    match args.next() {
        Some("validate") => {
            let rest: Vec<&str> = args.collect();
            match rest.as_slice() {
                [] => validate(Path::new("models")),
                [path] if !path.starts_with('-') => validate(Path::new(path)),
                _ => usage_error("validate takes at most one PATH"),
            }
        }
        Some("serve") => {
            let rest: Vec<&str> = args.collect();
            match rest.as_slice() {
                [] => crate::serve::main(None),
                ["--config", path] => crate::serve::main(Some(Path::new(path))),
                _ => usage_error("serve takes only --config FILE"),
            }
        }
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("version" | "--version" | "-V") => {
            println!("ward {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => usage_error(&format!("unknown command {other:?}")),
        None => usage_error("no command given"),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("ward: {message}\n\n{USAGE}");
    ExitCode::from(USAGE_ERROR)
}

/// `ward validate PATH`: one version directory, or every version under a root.
fn validate(path: &Path) -> ExitCode {
    let host = crate::host::probe();
    let targets: Vec<(String, PathBuf)> = if path.join(CONTRACT_FILE).is_file() {
        vec![(path.display().to_string(), path.to_owned())]
    } else if path.is_dir() {
        match discovery::scan(path) {
            Ok(found) if found.is_empty() => {
                eprintln!(
                    "ward: no model versions under {} (expected <model_id>/<version>/model.yaml)",
                    path.display()
                );
                return ExitCode::from(1);
            }
            Ok(found) => found
                .into_iter()
                .map(|c| (format!("{}/{}", c.model_dir, c.version_dir), c.path))
                .collect(),
            Err(e) => {
                eprintln!("ward: cannot read {}: {e}", path.display());
                return ExitCode::from(USAGE_ERROR);
            }
        }
    } else {
        eprintln!(
            "ward: {} is neither a model root nor a model version directory",
            path.display()
        );
        return ExitCode::from(USAGE_ERROR);
    };
    let (ok, total) = report(&targets, &host, &mut std::io::stdout().lock());
    if ok == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Prints one line per version and one per problem; returns (valid, total).
fn report(targets: &[(String, PathBuf)], host: &HostInfo, out: &mut impl Write) -> (usize, usize) {
    let width = targets
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0);
    let mut ok = 0;
    for (name, dir) in targets {
        // A closed stdout (e.g. `| head`) must not turn into a panic.
        let _ = match validate_version_dir(dir, host) {
            Ok(_) => {
                ok += 1;
                writeln!(out, "{name:width$}  OK")
            }
            Err(invalid) => {
                let n = invalid.problems.len();
                let mut r = writeln!(
                    out,
                    "{name:width$}  INVALID ({n} problem{})",
                    if n == 1 { "" } else { "s" }
                );
                for p in &invalid.problems {
                    let path = if p.path.is_empty() {
                        "(document)"
                    } else {
                        &p.path
                    };
                    r = r.and(writeln!(
                        out,
                        "    {path}: {} [{}]",
                        p.message,
                        p.kind.as_str()
                    ));
                }
                r
            }
        };
    }
    let _ = writeln!(out, "{ok} of {} model versions valid", targets.len());
    (ok, targets.len())
}
