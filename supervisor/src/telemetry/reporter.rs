//! The capability reporter (spec 003 §7.1): tells a backend what this
//! runtime can do by posting the declaration ([`super::capability`]) at
//! startup, after each burst of state or health changes, and on every
//! heartbeat. Reporting is best-effort and off the serving path: a backend
//! that is down, slow, answering errors or presenting an untrusted
//! certificate costs a log line (one per streak of failures) and a metric,
//! and the next beat simply tries again.
//!
//! The POST goes through the one outgoing client ([`crate::http_client`]),
//! so an `https://` backend works directly; `registration.ca_file` adds
//! trusted roots (a private CA) and `registration.token_file` a bearer token.
//! Both files are read once, by [`Registration::from_config`] at start-up, so
//! that a missing one stops `ward serve` with a clear error instead of
//! failing every beat.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Uri;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use ward_config::ward::RegistrationConfig;

use super::capability::declaration;
use crate::host::hardware::Hardware;
use crate::http_client::{BearerToken, ClientError, HttpClient, parse_url};
use crate::registry::supervisor::Supervisor;

/// How long a burst of events may go on before the report goes out: a
/// rescan or a crash loop moves several versions through several states in a
/// few milliseconds, and the backend needs only the result.
const COALESCE: Duration = Duration::from_millis(100);

/// Why registration cannot start: a configuration problem, reported at
/// start-up.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("invalid registration.url")]
    Url(#[source] ClientError),
    #[error("unusable registration.ca_file")]
    CaFile(#[source] ClientError),
    #[error("cannot read registration.token_file {}", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("registration.token_file {} is empty", path.display())]
    EmptyToken { path: PathBuf },
    #[error("unusable registration.token_file {}", path.display())]
    BadToken {
        path: PathBuf,
        #[source]
        source: ClientError,
    },
}

/// Where and how to report: the checked URL, a client trusting the
/// configured roots, the token, the timing.
#[derive(Debug)]
pub struct Registration {
    url: Uri,
    client: HttpClient,
    token: Option<BearerToken>,
    heartbeat: Duration,
    timeout: Duration,
}

impl Registration {
    /// `None` when no URL is configured (registration is off). Reads the CA
    /// and token files now.
    pub fn from_config(
        cfg: &RegistrationConfig,
    ) -> Result<Option<Registration>, RegistrationError> {
        let Some(url) = cfg.url.as_deref() else {
            return Ok(None);
        };
        let url = parse_url(url).map_err(RegistrationError::Url)?;
        let client = HttpClient::new(cfg.ca_file.as_deref()).map_err(RegistrationError::CaFile)?;
        let token = cfg.token_file.as_deref().map(read_token).transpose()?;
        Ok(Some(Registration {
            url,
            client,
            token,
            heartbeat: Duration::from_millis(cfg.heartbeat_ms.max(1)),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
        }))
    }
}

/// The token is the file's content without surrounding whitespace: secret
/// files usually end with a newline.
fn read_token(path: &Path) -> Result<BearerToken, RegistrationError> {
    let text = std::fs::read_to_string(path).map_err(|source| RegistrationError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(RegistrationError::EmptyToken {
            path: path.to_owned(),
        });
    }
    BearerToken::new(token).map_err(|source| RegistrationError::BadToken {
        path: path.to_owned(),
        source,
    })
}

/// Posts the declaration until `cancel`: at once, after each burst of state
/// or health changes, and every heartbeat.
///
/// `metrics_hook` hears whether each report got through. Spawn it on its own
/// task: it never touches serving, and a failed report is only retried at
/// the next beat or change.
pub async fn run(
    sup: Arc<Supervisor>,
    reg: Registration,
    hw: Hardware,
    metrics_hook: impl Fn(bool) + Send + Sync + 'static,
    cancel: CancellationToken,
) {
    let mut beat = tokio::time::interval(reg.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events = sup.subscribe();
    let mut events_open = true;
    let mut failing = false;
    let url = &reg.url;
    tracing::info!(
        %url,
        heartbeat_ms = reg.heartbeat.as_millis(),
        bearer = reg.token.is_some(),
        "capability registration on"
    );

    loop {
        // The first tick is immediate: that is the startup report.
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = beat.tick() => {}
            event = events.recv(), if events_open => match event {
                // A lagged receiver missed events, which only means that
                // something changed: report, exactly as for one event.
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(COALESCE) => {}
                    }
                    loop {
                        match events.try_recv() {
                            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Closed) => {
                                events_open = false;
                                break;
                            }
                        }
                    }
                    // This report stands for a beat too.
                    beat.reset();
                }
                Err(RecvError::Closed) => {
                    events_open = false;
                    continue;
                }
            },
        }

        let body = Bytes::from(declaration(&sup, &hw).to_string());
        let post = reg
            .client
            .post_json(url, body, reg.token.as_ref(), reg.timeout);
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = post => outcome,
        };
        match outcome {
            Ok(status) => {
                if failing {
                    tracing::info!(%url, status, "capability registration reaches the backend again");
                } else {
                    tracing::debug!(%url, status, "capability declaration sent");
                }
                failing = false;
                metrics_hook(true);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(%url, error = %crate::errors::error_chain(&e), "capability registration failed; retrying at the next beat or change");
                }
                failing = true;
                metrics_hook(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use std::sync::atomic::Ordering;
    use tokio::sync::mpsc;

    use super::*;
    use crate::http_client::testing::{Answer, Receiver, TestCa};
    use crate::telemetry::capability::tests::cpu;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn registration(url: String, heartbeat_ms: u64) -> RegistrationConfig {
        RegistrationConfig {
            url: Some(url),
            heartbeat_ms,
            timeout_ms: 2_000,
            runtime_id: "test-runtime".to_owned(),
            ..Default::default()
        }
    }

    fn supervisor(reg: RegistrationConfig, model_root: &Path) -> Arc<Supervisor> {
        let cfg = ward_config::WardConfig {
            model_root: model_root.to_owned(),
            registration: reg,
            ..Default::default()
        };
        Supervisor::new(
            cfg,
            ward_config::HostInfo::default(),
            "/nonexistent/ward-worker".into(),
            crate::sandbox::probe::probe(),
            crate::sandbox::jail::RuntimePaths::default(),
            None,
            tokio_util::task::TaskTracker::new(),
        )
    }

    /// Runs the reporter of `sup`'s configuration; the channel hears each
    /// report's outcome.
    fn start(
        sup: &Arc<Supervisor>,
    ) -> (
        mpsc::UnboundedReceiver<bool>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let reg = Registration::from_config(&sup.cfg.registration)
            .expect("valid registration")
            .expect("registration on");
        let (hook_tx, hook) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let reporter = tokio::spawn(run(
            sup.clone(),
            reg,
            cpu(),
            move |ok| {
                let _ = hook_tx.send(ok);
            },
            cancel.clone(),
        ));
        (hook, cancel, reporter)
    }

    async fn stop(cancel: CancellationToken, reporter: tokio::task::JoinHandle<()>) {
        cancel.cancel();
        tokio::time::timeout(TIMEOUT, reporter)
            .await
            .expect("stops on cancel")
            .expect("reporter task");
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<bool>) -> bool {
        tokio::time::timeout(TIMEOUT, rx.recv())
            .await
            .expect("in time")
            .expect("channel open")
    }

    #[tokio::test]
    async fn registers_at_startup_and_after_a_burst_of_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut backend = Receiver::plain(Answer::status(200)).await;
        let sup = supervisor(registration(backend.url_string(), 3_600_000), dir.path());
        let (mut hook, cancel, reporter) = start(&sup);

        let first = backend.next().await;
        assert_eq!(first.request_line, "POST /register HTTP/1.1");
        assert_eq!(first.header("authorization"), None, "no token configured");
        let first = first.json();
        assert_eq!(first["runtime_id"], "test-runtime");
        assert_eq!(first["models"], json!([]));
        assert!(next(&mut hook).await);

        // Three versions each go VALIDATING → INVALID: six events in two
        // bunches (validation runs between them, off the async threads).
        for version in ["1.0.0", "2.0.0", "3.0.0"] {
            std::fs::create_dir_all(dir.path().join("m").join(version)).expect("mkdir");
        }
        sup.rescan().await.expect("rescan");
        let second = backend.next().await.json();
        assert_eq!(
            second["health_summary"]["total_models"], 0,
            "INVALID is not listed"
        );
        assert!(next(&mut hook).await);
        let mut more = 0;
        while backend.next_within(COALESCE * 5).await.is_some() {
            more += 1;
        }
        assert!(more <= 1, "{} reports for one burst of 6 events", more + 1);
        stop(cancel, reporter).await;
    }

    #[tokio::test]
    async fn failures_are_reported_and_retried_at_the_next_beat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let answer = Answer::status(503);
        let Answer::Status(status) = answer.clone() else {
            unreachable!("a status answer")
        };
        let mut backend = Receiver::plain(answer).await;
        let sup = supervisor(registration(backend.url_string(), 50), dir.path());
        let (mut hook, cancel, reporter) = start(&sup);
        backend.next().await;
        assert!(!next(&mut hook).await);
        status.store(200, Ordering::SeqCst);
        // Reports that were already on their way may still fail.
        while !next(&mut hook).await {}
        stop(cancel, reporter).await;
    }

    #[tokio::test]
    async fn registers_over_https_with_the_configured_ca_and_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "s3cret-registration-token\n").expect("write the token");
        let mut backend = Receiver::tls(&ca, Answer::status(204)).await;
        let reg = RegistrationConfig {
            ca_file: Some(ca.write_pem(dir.path())),
            token_file: Some(token_file),
            ..registration(backend.url_string(), 3_600_000)
        };
        assert!(
            reg.url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
        );
        let root = dir.path().join("models");
        let sup = supervisor(reg, &root);
        let (mut hook, cancel, reporter) = start(&sup);

        let first = backend.next().await;
        assert_eq!(
            first.header("authorization"),
            Some("Bearer s3cret-registration-token")
        );
        assert_eq!(first.header("content-type"), Some("application/json"));
        let first = first.json();
        assert_eq!(first["runtime_id"], "test-runtime");
        assert_eq!(first["hardware"]["cpu_model"], "Test CPU");
        assert_eq!(first["models"], json!([]));
        assert!(next(&mut hook).await, "a 2xx over TLS counts as a success");
        stop(cancel, reporter).await;
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_a_counted_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new();
        let mut backend = Receiver::tls(&ca, Answer::status(204)).await;
        // No ca_file: the system's roots do not know the test CA.
        let sup = supervisor(registration(backend.url_string(), 50), dir.path());
        let (mut hook, cancel, reporter) = start(&sup);
        assert!(!next(&mut hook).await);
        assert!(!next(&mut hook).await, "retried at the next beat");
        assert!(
            backend.next_within(COALESCE).await.is_none(),
            "nothing is sent over an untrusted connection"
        );
        stop(cancel, reporter).await;
    }

    #[test]
    fn configuration_problems_are_errors_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            Registration::from_config(&RegistrationConfig::default())
                .expect("valid")
                .is_none(),
            "no url: registration is off"
        );
        let url = "https://127.0.0.1:9/register".to_owned();
        let err = Registration::from_config(&RegistrationConfig {
            ca_file: Some(dir.path().join("missing.pem")),
            ..registration(url.clone(), 1_000)
        })
        .expect_err("missing CA file");
        assert!(matches!(err, RegistrationError::CaFile(_)), "{err:?}");
        let chain = crate::errors::error_chain(&err);
        assert!(
            chain.contains("registration.ca_file") && chain.contains("missing.pem"),
            "{chain}"
        );

        let err = Registration::from_config(&RegistrationConfig {
            token_file: Some(dir.path().join("missing-token")),
            ..registration(url.clone(), 1_000)
        })
        .expect_err("missing token file");
        assert!(
            matches!(err, RegistrationError::TokenFile { .. }),
            "{err:?}"
        );

        let blank = dir.path().join("blank");
        std::fs::write(&blank, " \n").expect("write");
        let err = Registration::from_config(&RegistrationConfig {
            token_file: Some(blank),
            ..registration(url.clone(), 1_000)
        })
        .expect_err("empty token");
        assert!(
            matches!(err, RegistrationError::EmptyToken { .. }),
            "{err:?}"
        );

        let err = Registration::from_config(&registration("http://a@b/".to_owned(), 1_000))
            .expect_err("bad url");
        assert!(matches!(err, RegistrationError::Url(_)), "{err:?}");

        let secret = dir.path().join("secret");
        std::fs::write(&secret, "do-not-log-me").expect("write");
        let reg = Registration::from_config(&RegistrationConfig {
            token_file: Some(secret),
            ..registration(url, 1_000)
        })
        .expect("valid")
        .expect("on");
        assert!(!format!("{reg:?}").contains("do-not-log-me"));
    }
}
