//! Command-line entry point of the `ward` binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ward_config::model::CONTRACT_FILE;
use ward_config::{HostInfo, validate_version_dir};

use crate::registry::discovery;

const USAGE: &str = "\
ward — a model-serving supervisor for untrusted model plugins

Usage:
  ward serve [--config FILE]
                         serve the models under the model root (config from FILE,
                         WARD_CONFIG, or defaults; WARD_* variables override fields)
  ward validate [PATH]   check model.yaml contracts: a model root (default: models)
                         or one <model_id>/<version> directory
  ward models [--url URL]
                         a table of a running server's models: state, health, pid
  ward infer MODEL VERSION (--json FILE | --image FILE) [--url URL]
                         one inference against a running server: FILE is an Open
                         Inference Protocol JSON request (- for stdin) or a
                         JPEG/PNG picture for a frame model; prints the answer

  ward image build [--config FILE]
                         build the container workers' image (runtime.container_image)
                         from ward-worker, locally, with no registry

URL defaults to $WARD_URL, else http://127.0.0.1:8080.
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
        Some("models") => {
            let rest: Vec<&str> = args.collect();
            match rest.as_slice() {
                [] => models(&default_url()),
                ["--url", url] => models(url),
                _ => usage_error("models takes only --url URL"),
            }
        }
        Some("image") => {
            let rest: Vec<&str> = args.collect();
            match rest.as_slice() {
                ["build"] => crate::serve::build_image(None),
                ["build", "--config", path] => crate::serve::build_image(Some(Path::new(path))),
                _ => usage_error("image takes: build [--config FILE]"),
            }
        }
        Some("infer") => {
            let rest: Vec<&str> = args.collect();
            infer(&rest)
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
    let host = crate::host::validation::probe();
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

fn default_url() -> String {
    std::env::var("WARD_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned())
}

const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn fetch_json(url: &str, path: &str) -> Result<serde_json::Value, String> {
    let resp = crate::http_client::request("GET", url, path, None, CLIENT_TIMEOUT)
        .map_err(|e| crate::errors::error_chain(&e))?;
    serde_json::from_slice(&resp.body)
        .map_err(|e| format!("{url}{path} answered {} with non-JSON: {e}", resp.status))
}

/// `ward models`: one line per model version.
fn models(url: &str) -> ExitCode {
    let listing = match fetch_json(url, "/v1/models") {
        Ok(v) => v,
        Err(e) => {
            eprintln!("ward: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows: Vec<[String; 7]> = listing["models"]
        .as_array()
        .map(|models| {
            models
                .iter()
                .map(|m| {
                    let text = |v: &serde_json::Value| {
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    };
                    [
                        text(&m["model_id"]),
                        text(&m["version"]),
                        text(&m["state"]),
                        text(&m["health"]["health"]),
                        m["pid"]
                            .as_u64()
                            .map_or_else(|| "-".to_owned(), |p| p.to_string()),
                        m["restarts"].as_u64().unwrap_or(0).to_string(),
                        m["reason"].as_str().map_or_else(
                            || m["mode_reason"].as_str().unwrap_or("").to_owned(),
                            |r| r.lines().next().unwrap_or("").chars().take(100).collect(),
                        ),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let header = [
        "MODEL", "VERSION", "STATE", "HEALTH", "PID", "RESTARTS", "WHY",
    ]
    .map(str::to_owned);
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    ExitCode::SUCCESS
}

/// `ward infer MODEL VERSION (--json FILE | --image FILE) [--url URL]`.
fn infer(args: &[&str]) -> ExitCode {
    let (model, version, mut rest) = match args {
        [m, v, rest @ ..] if !m.starts_with('-') && !v.starts_with('-') => (*m, *v, rest),
        _ => return usage_error("infer needs MODEL VERSION and --json FILE or --image FILE"),
    };
    let (mut json, mut image, mut url) = (None, None, default_url());
    while let [flag, value, tail @ ..] = rest {
        match *flag {
            "--json" => json = Some(*value),
            "--image" => image = Some(*value),
            "--url" => url = (*value).to_owned(),
            other => return usage_error(&format!("infer: unknown option {other:?}")),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return usage_error("infer: every option needs a value");
    }
    let read = |path: &str| -> std::io::Result<Vec<u8>> {
        if path == "-" {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            Ok(buf)
        } else {
            std::fs::read(path)
        }
    };
    let (path, content_type, file) = match (json, image) {
        (Some(f), None) => (
            format!("/v2/models/{model}/versions/{version}/infer"),
            "application/json",
            f,
        ),
        (None, Some(f)) => {
            let ct = if f.to_ascii_lowercase().ends_with(".png") {
                "image/png"
            } else {
                "image/jpeg"
            };
            (
                format!("/v1/models/{model}/versions/{version}/frame"),
                ct,
                f,
            )
        }
        _ => return usage_error("infer needs exactly one of --json FILE and --image FILE"),
    };
    let body = match read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ward: cannot read {file}: {e}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    match crate::http_client::request(
        "POST",
        &url,
        &path,
        Some((content_type, &body)),
        CLIENT_TIMEOUT,
    ) {
        Ok(resp) => {
            let text = match serde_json::from_slice::<serde_json::Value>(&resp.body) {
                Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
                Err(_) => String::from_utf8_lossy(&resp.body).into_owned(),
            };
            println!("{text}");
            if (200..300).contains(&resp.status) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("ward: {}", crate::errors::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
