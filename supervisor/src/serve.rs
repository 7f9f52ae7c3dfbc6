//! `ward serve`: the supervisor's main job.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use ward_config::WardConfig;
use ward_config::ward::Flags;

use crate::registry::supervisor::Supervisor;

/// Where the worker binary is: configured, or beside this executable.
fn worker_binary(cfg: &WardConfig) -> anyhow::Result<PathBuf> {
    if let Some(p) = &cfg.worker.binary {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("cannot locate the ward executable")?;
    let beside = exe.with_file_name("ward-worker");
    anyhow::ensure!(
        beside.is_file(),
        "no ward-worker beside {} (set worker.binary or WARD_WORKER_BINARY)",
        exe.display()
    );
    Ok(beside)
}

/// How ward's own log lines (on stderr) look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers: `timestamp`, `level`,
    /// `target`, and `fields` (with the `message`).
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Colours only for a person at a terminal: under systemd, Docker or
        // a log shipper escape codes are noise in every line.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => logs.json().with_ansi(false).try_init(),
    };
}

pub fn main(config: Option<&Path>, flags: &Flags, log_format: LogFormat) -> ExitCode {
    init_tracing(log_format);
    match run(config, flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match log_format {
                LogFormat::Text => eprintln!("ward: {e:#}"),
                // A shipper reads every line as JSON, the last one too.
                LogFormat::Json => tracing::error!(error = format!("{e:#}"), "ward stopped"),
            }
            ExitCode::FAILURE
        }
    }
}

fn config(config: Option<&Path>, flags: &Flags) -> anyhow::Result<WardConfig> {
    let env_config = std::env::var_os("WARD_CONFIG");
    let path = ward_config::ward::config_path(config, env_config.as_deref(), Path::is_file);
    if let Some(path) = &path {
        tracing::info!(path = %path.display(), "configuration file");
    }
    let resolved =
        WardConfig::resolve(path.as_deref(), std::env::vars(), flags).context("configuration")?;
    for w in &resolved.warnings {
        tracing::warn!(variable = %w.var, closest = w.closest, "{w}");
    }
    Ok(resolved.config)
}

/// `ward image build --server [--tag TAG]`: builds the self-contained
/// server image from this ward, its worker, ONNX Runtime and the plugins'
/// Python (see [`crate::launch::server_image`]).
pub fn build_server_image(config_path: Option<&Path>, tag: &str) -> ExitCode {
    image_job(config_path, |cfg| {
        let mut cfg = cfg.clone();
        crate::sandbox::jail::resolve_runtime_paths(&mut cfg);
        let sources = crate::launch::server_image::Sources {
            ward: std::env::current_exe().context("cannot locate the ward executable")?,
            worker: worker_binary(&cfg)?,
            onnxruntime: cfg.worker.onnxruntime_library.clone().context(
                "no ONNX Runtime library: set worker.onnxruntime_library or ORT_DYLIB_PATH",
            )?,
            python: cfg.worker.python.clone(),
        };
        let tag = tag.to_owned();
        Ok(async move |engine: crate::launch::container::Engine| {
            let context = crate::launch::server_image::build(&engine, sources, &tag).await?;
            Ok(format!("built {tag} (build context {} MB)", context >> 20))
        })
    })
}

/// `ward image build`: (re)builds the container workers' image.
pub fn build_image(config_path: Option<&Path>) -> ExitCode {
    image_job(config_path, |cfg| {
        let binary = worker_binary(cfg)?;
        Ok(async move |engine: crate::launch::container::Engine| {
            engine.build_image_from(&binary).await?;
            Ok(format!("built {}", engine.image))
        })
    })
}

/// Runs an image build: `prepare` reads what it needs from the
/// configuration, and the job it returns runs on a connected Docker engine
/// and says what it built.
fn image_job<J>(
    config_path: Option<&Path>,
    prepare: impl FnOnce(&WardConfig) -> anyhow::Result<J>,
) -> ExitCode
where
    J: AsyncFnOnce(crate::launch::container::Engine) -> anyhow::Result<String>,
{
    init_tracing(LogFormat::Text);
    let built = (|| {
        let cfg = config(config_path, &Flags::default())?;
        let job = prepare(&cfg)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        runtime.block_on(async {
            let engine =
                crate::launch::container::Engine::connect(&cfg, Default::default()).await?;
            job(engine).await
        })
    })();
    match built {
        Ok(what) => {
            println!("{what}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ward: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config_path: Option<&Path>, flags: &Flags) -> anyhow::Result<()> {
    let cfg = config(config_path, flags)?;
    let binary = worker_binary(&cfg)?;
    crate::launch::native::prepare_run_dir(&cfg.run_dir)?;
    // Orphaned grandchildren (a plugin's forks) come back to us to be reaped,
    // not to a slow init.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(serve(cfg, binary))
}

/// Serves `router` on `listener` (HTTP/1.1 and HTTP/2) until the
/// supervisor stops.
fn serve_on(
    sup: &Supervisor,
    what: &'static str,
    listener: tokio::net::TcpListener,
    router: axum::Router,
) {
    let stop = sup.cancelled();
    // No Nagle delay: an HTTP/2 answer is several small frames (headers,
    // data, trailers) that must not wait for the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    sup.spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the {what} server failed");
        }
    });
}

/// Serves until SIGTERM or SIGINT: the listener, the signals and the
/// supervisor's tasks (the HTTP server, the capability reporter); the
/// registry's start-up and shutdown are [`Supervisor`]'s.
async fn serve(cfg: WardConfig, binary: PathBuf) -> anyhow::Result<()> {
    let bind = cfg.server.bind;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot bind {bind}"))?;
    let addr = listener.local_addr()?;
    let grpc_listener = match cfg.server.grpc_bind {
        Some(grpc) => Some(
            tokio::net::TcpListener::bind(grpc)
                .await
                .with_context(|| format!("cannot bind {grpc} (server.grpc_bind)"))?,
        ),
        None => None,
    };
    // The CA and token files are read now: a missing one stops start-up.
    let registration = crate::telemetry::reporter::Registration::from_config(&cfg.registration)
        .context("capability registration")?;
    let sup = Supervisor::start(cfg, binary)
        .await
        .context("start-up (probes and the first scan of the model root)")?;
    // Orphans re-parented to this subreaper are waited for as they die.
    sup.spawn(crate::launch::reaper::run(sup.cancelled()));
    // Tests and scripts read these lines to learn the ports (bind may say
    // :0); the HTTP line comes last, when both are known.
    if let Some(l) = &grpc_listener {
        println!("ward: gRPC on {}", l.local_addr()?);
    }
    println!("ward: listening on http://{addr}");
    // Probing may start the CUDA driver, which blocks: off the async threads.
    let hardware = tokio::task::spawn_blocking(crate::host::hardware::probe)
        .await
        .context("hardware probe")?;
    let metrics = Arc::new(crate::telemetry::metrics::Metrics::new());
    // Capability registration runs on its own: a slow backend never blocks
    // serving. It stops first at shutdown; the HTTP server last, when the
    // supervisor has stopped every worker.
    let stop_reporter = sup.cancelled();
    if let Some(registration) = registration {
        let hook = metrics.clone();
        sup.spawn(crate::telemetry::reporter::run(
            sup.clone(),
            registration,
            hardware.clone(),
            move |ok| {
                hook.observe_registration(ok);
                if ok {
                    hook.set_registration_last_success(crate::time::now_ms() as f64 / 1e3);
                }
            },
            stop_reporter.clone(),
        ));
    }
    let app = Arc::new(crate::api::App {
        sup: sup.clone(),
        metrics,
        hardware,
    });
    // One budget of request bytes in flight, one failure log, for both faces.
    let intake = Arc::new(crate::api::state::Intake::new(&sup.cfg));
    serve_on(
        &sup,
        "HTTP",
        listener,
        crate::api::router(app.clone(), intake.clone()),
    );
    if let Some(l) = grpc_listener {
        serve_on(&sup, "gRPC", l, crate::grpc::router(app, intake));
    }
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match sup.rescan().await {
                    Ok(r) => tracing::info!(added = ?r.added, removed = ?r.removed, retried = ?r.retried, unchanged = r.unchanged, "rescan (SIGHUP)"),
                    Err(e) => tracing::error!(error = %e, "rescan failed"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: draining requests, stopping workers");
    stop_reporter.cancel();
    sup.shutdown().await;
    tracing::info!("ward stopped");
    Ok(())
}
