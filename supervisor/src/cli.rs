//! Command-line entry point of the `ward` binary: `clap` turns the arguments
//! into a [`Command`], and each command is one function below.
//!
//! Exit status: 0 on success; 1 when the command ran and failed (for
//! `validate`: some version is invalid); 2 for a usage or I/O error, which
//! includes every argument clap rejects.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use ward_config::model::CONTRACT_FILE;
use ward_config::ward::Flags;
use ward_config::{HostInfo, Problem, validate_version_dir};

use crate::registry::discovery;

/// Exit status for a usage or I/O error.
const USAGE_ERROR: u8 = 2;

/// ward — a model-serving supervisor for untrusted model plugins.
#[derive(Debug, Parser)]
#[command(name = "ward", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the models under the model root over HTTP until SIGTERM or Ctrl-C.
    #[command(after_help = "\
Every ward.yaml field also has a WARD_* variable (README, \"Supervisor configuration\").
A flag beats its variable, which beats ward.yaml, which beats the default.
An unknown WARD_* variable is ignored with a warning.")]
    Serve(ServeArgs),
    /// Check model.yaml contracts, reporting every problem with its field path.
    #[command(after_help = "\
--format json prints {\"versions\": [{\"name\", \"valid\", \"problems\": [{\"path\", \"kind\",
\"message\"}]}], \"valid\", \"total\"}; a problem about the whole file has path \"\".

Exit status: 0 when every version is valid, 1 when any is invalid, 2 for a
usage or I/O error.")]
    Validate(ValidateArgs),
    /// A table of a running server's models: state, health, pid, restarts, why.
    Models {
        #[command(flatten)]
        server: ServerUrl,
    },
    /// One inference against a running server; prints the answer.
    Infer(InferArgs),
    /// Exit 0 when a running server is ready (GET /v2/health/ready answers
    /// 200), else 1: a health check for Docker or a script.
    Health {
        #[command(flatten)]
        server: ServerUrl,
    },
    /// The container workers' image, or the server's own.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// ward.yaml to read [env: WARD_CONFIG; default: /etc/ward/ward.yaml if it exists, else none]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where model plugins live: <DIR>/<model_id>/<version>/model.yaml [env: WARD_MODEL_ROOT]
    #[arg(long, value_name = "DIR")]
    model_root: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8080; port 0 picks a free one [env: WARD_BIND]
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Address for the gRPC services, e.g. 0.0.0.0:8081; empty turns gRPC off [env: WARD_GRPC_BIND]
    #[arg(long, value_name = "ADDR", value_parser = grpc_bind)]
    grpc_bind: Option<GrpcBind>,
    /// Where worker logs go: <DIR>/<model_id>/<version>.log [env: WARD_LOG_DIR]
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// How ward's own log lines on stderr look: text, or one JSON object a line for log shippers
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "WARD_LOG_FORMAT",
        default_value_t = crate::serve::LogFormat::Text
    )]
    log_format: crate::serve::LogFormat,
}

/// `--grpc-bind ADDR`, or `--grpc-bind ''` for no gRPC.
#[derive(Debug, Clone, Copy)]
struct GrpcBind(Option<SocketAddr>);

fn grpc_bind(v: &str) -> Result<GrpcBind, String> {
    if v.trim().is_empty() {
        return Ok(GrpcBind(None));
    }
    v.trim()
        .parse()
        .map(|a| GrpcBind(Some(a)))
        .map_err(|e| format!("{e}"))
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// A model root, or one <model_id>/<version> directory.
    #[arg(value_name = "PATH", default_value = "models")]
    path: PathBuf,
    /// How to print the report.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One line per version, one per problem.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// The server a client command talks to.
#[derive(Debug, Args)]
struct ServerUrl {
    /// The running ward server.
    #[arg(
        long,
        value_name = "URL",
        env = "WARD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("request").required(true).args(["json", "image"])))]
struct InferArgs {
    /// The model id.
    model: String,
    /// The model version.
    version: String,
    /// An Open Inference Protocol JSON request; - reads stdin.
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// A JPEG or PNG picture, for a model with frame input; - reads stdin.
    #[arg(long, value_name = "FILE")]
    image: Option<String>,
    #[command(flatten)]
    server: ServerUrl,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Build the container workers' image (runtime.container_image) from
    /// ward-worker, locally, with no registry; with --server, the
    /// self-contained server image instead.
    Build {
        /// ward.yaml to read [env: WARD_CONFIG]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Build the server image: ward, ward-worker, ONNX Runtime and a
        /// Python with numpy, runnable with no bind mount but the models.
        #[arg(long)]
        server: bool,
        /// The server image's tag.
        #[arg(long, value_name = "TAG", requires = "server", default_value = crate::launch::server_image::DEFAULT_TAG)]
        tag: String,
    },
}

/// Runs the command line in `std::env::args_os`.
pub fn main() -> ExitCode {
    run(std::env::args_os())
}

/// Runs one command line, program name first.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap's "error" also covers --help and --version, which go to
            // stdout and succeed.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(USAGE_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let flags = Flags {
                model_root: args.model_root,
                bind: args.bind,
                grpc_bind: args.grpc_bind.map(|g| g.0),
                log_dir: args.log_dir,
            };
            crate::serve::main(args.config.as_deref(), &flags, args.log_format)
        }
        Command::Validate(args) => validate(&args.path, args.format),
        Command::Models { server } => models(&server.url),
        Command::Infer(args) => infer(&args),
        Command::Health { server } => health(&server.url),
        Command::Image {
            command:
                ImageCommand::Build {
                    config,
                    server,
                    tag,
                },
        } => {
            if server {
                crate::serve::build_server_image(config.as_deref(), &tag)
            } else {
                crate::serve::build_image(config.as_deref())
            }
        }
        Command::Version => {
            println!("ward {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

/// `ward validate PATH`: one version directory, or every version under a root.
fn validate(path: &Path, format: Format) -> ExitCode {
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
    let verdicts = check(&targets, &host);
    let mut out = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) must not turn into a panic.
    let _ = match format {
        Format::Text => report_text(&verdicts, &mut out),
        Format::Json => report_json(&verdicts, &mut out),
    };
    if verdicts.iter().all(|v| v.problems.is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One version's validation outcome: valid when it has no problems.
struct Verdict {
    name: String,
    problems: Vec<Problem>,
}

fn check(targets: &[(String, PathBuf)], host: &HostInfo) -> Vec<Verdict> {
    targets
        .iter()
        .map(|(name, dir)| Verdict {
            name: name.clone(),
            problems: validate_version_dir(dir, host)
                .err()
                .map(|invalid| invalid.problems)
                .unwrap_or_default(),
        })
        .collect()
}

/// One line per version and one per problem, then a count.
fn report_text(verdicts: &[Verdict], out: &mut impl Write) -> std::io::Result<()> {
    let width = verdicts.iter().map(|v| v.name.len()).max().unwrap_or(0);
    for Verdict { name, problems } in verdicts {
        let n = problems.len();
        if n == 0 {
            writeln!(out, "{name:width$}  OK")?;
            continue;
        }
        let plural = if n == 1 { "" } else { "s" };
        writeln!(out, "{name:width$}  INVALID ({n} problem{plural})")?;
        for p in problems {
            let path = if p.path.is_empty() {
                "(document)"
            } else {
                &p.path
            };
            writeln!(out, "    {path}: {} [{}]", p.message, p.kind.as_str())?;
        }
    }
    let ok = verdicts.iter().filter(|v| v.problems.is_empty()).count();
    writeln!(out, "{ok} of {} model versions valid", verdicts.len())
}

/// The same report as one JSON document; a problem about the whole document
/// has an empty `path`.
fn report_json(verdicts: &[Verdict], out: &mut impl Write) -> std::io::Result<()> {
    let versions: Vec<serde_json::Value> = verdicts
        .iter()
        .map(|v| {
            let problems: Vec<serde_json::Value> = v
                .problems
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "path": p.path,
                        "kind": p.kind.as_str(),
                        "message": p.message,
                    })
                })
                .collect();
            serde_json::json!({
                "name": v.name,
                "valid": problems.is_empty(),
                "problems": problems,
            })
        })
        .collect();
    let report = serde_json::json!({
        "versions": versions,
        "valid": verdicts.iter().filter(|v| v.problems.is_empty()).count(),
        "total": verdicts.len(),
    });
    serde_json::to_writer_pretty(&mut *out, &report)?;
    writeln!(out)
}

const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `ward health`: whether the server at `url` is ready.
fn health(url: &str) -> ExitCode {
    const PATH: &str = "/v2/health/ready";
    let timeout = std::time::Duration::from_secs(5);
    match crate::http_client::request("GET", url, PATH, None, timeout) {
        Ok(resp) if resp.status == 200 => ExitCode::SUCCESS,
        Ok(resp) => {
            eprintln!("ward: {url}{PATH} answered {}", resp.status);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ward: {}", crate::errors::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `ward models`: one line per model version.
fn models(url: &str) -> ExitCode {
    const PATH: &str = "/v1/models";
    let resp = match crate::http_client::request("GET", url, PATH, None, CLIENT_TIMEOUT) {
        Ok(resp) => resp,
        Err(e) => {
            eprintln!("ward: {}", crate::errors::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let listing: serde_json::Value = match serde_json::from_slice(&resp.body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "ward: {url}{PATH} answered {} with non-JSON: {e}",
                resp.status
            );
            return ExitCode::FAILURE;
        }
    };
    let rows: Vec<[String; 7]> = listing["models"]
        .as_array()
        .map(|models| models.iter().map(model_row).collect())
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

/// One model version of `GET /v1/models` as table cells.
fn model_row(m: &serde_json::Value) -> [String; 7] {
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
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
}

/// `ward infer MODEL VERSION (--json FILE | --image FILE) [--url URL]`.
fn infer(args: &InferArgs) -> ExitCode {
    let InferArgs { model, version, .. } = args;
    // clap's "request" group asks for exactly one of the two.
    let (path, content_type, file) = match (&args.json, &args.image) {
        (Some(f), _) => (
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
        (None, None) => {
            eprintln!("ward: infer needs --json FILE or --image FILE");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let read = |path: &str| -> std::io::Result<Vec<u8>> {
        if path == "-" {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            Ok(buf)
        } else {
            std::fs::read(path)
        }
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
        &args.server.url,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use ward_config::ProblemKind;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("ward").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn serve_takes_its_flags() {
        let Ok(Command::Serve(args)) = parse(&[
            "serve",
            "--model-root",
            "m",
            "--bind",
            "127.0.0.1:0",
            "--log-dir",
            "l",
            "--config",
            "w.yaml",
            "--log-format",
            "json",
        ]) else {
            panic!("not a serve command");
        };
        assert_eq!(args.log_format, crate::serve::LogFormat::Json);
        assert_eq!(args.model_root.as_deref(), Some(Path::new("m")));
        assert_eq!(args.bind, Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert_eq!(args.log_dir.as_deref(), Some(Path::new("l")));
        assert_eq!(args.config.as_deref(), Some(Path::new("w.yaml")));
        let e = parse(&["serve", "--bind", "nowhere"]).unwrap_err();
        assert!(e.use_stderr() && e.to_string().contains("--bind"), "{e}");
    }

    #[test]
    fn image_build_takes_server_and_a_tag_only_with_it() {
        let Ok(Command::Image {
            command: ImageCommand::Build { server, tag, .. },
        }) = parse(&["image", "build", "--server"])
        else {
            panic!("not an image build");
        };
        assert!(server);
        assert_eq!(tag, crate::launch::server_image::DEFAULT_TAG);
        assert!(parse(&["image", "build", "--server", "--tag", "w:1"]).is_ok());
        assert!(parse(&["image", "build", "--tag", "w:1"]).is_err());
        assert!(matches!(
            parse(&["health", "--url", "http://127.0.0.1:1"]),
            Ok(Command::Health { .. })
        ));
    }

    #[test]
    fn infer_needs_exactly_one_request_file() {
        assert!(parse(&["infer", "digits", "1.0.0", "--json", "-"]).is_ok());
        assert!(parse(&["infer", "digits", "1.0.0"]).is_err());
        assert!(parse(&["infer", "digits", "1.0.0", "--json", "a", "--image", "b"]).is_err());
    }

    #[test]
    fn validate_takes_one_path_and_a_format() {
        let Ok(Command::Validate(args)) = parse(&["validate"]) else {
            panic!("not a validate command");
        };
        assert_eq!(
            (args.path.as_path(), args.format),
            (Path::new("models"), Format::Text)
        );
        assert!(parse(&["validate", "a", "b"]).is_err());
        assert!(parse(&["validate", "--format", "xml"]).is_err());
    }

    #[test]
    fn the_json_report_lists_every_problem() {
        let verdicts = [
            Verdict {
                name: "digits/1.0.0".into(),
                problems: vec![],
            },
            Verdict {
                name: "typos/1.0.0".into(),
                problems: vec![Problem {
                    path: "input.type".into(),
                    kind: ProblemKind::InvalidValue,
                    message: "unknown value \"vidoe\"".into(),
                }],
            },
        ];
        let mut out = Vec::new();
        report_json(&verdicts, &mut out).unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            report,
            serde_json::json!({
                "versions": [
                    {"name": "digits/1.0.0", "valid": true, "problems": []},
                    {"name": "typos/1.0.0", "valid": false, "problems": [
                        {"path": "input.type", "kind": "invalid_value", "message": "unknown value \"vidoe\""}
                    ]},
                ],
                "valid": 1,
                "total": 2,
            })
        );
    }
}
