//! The one outgoing HTTP client: the capability reporter's POSTs to a
//! backend, and the command line's requests to a ward server.
//!
//! It is `hyper-util`'s legacy client, which the Docker client compiles
//! anyway, with TLS through rustls on the `ring` provider, so that an
//! `https://` backend needs no terminating proxy. Trusted roots are the
//! system's (rustls-native-certs) plus, optionally, a PEM file of extra roots:
//! a private CA is the usual case for an internal backend.
//!
//! Every exchange is one request on one connection (no pool): the reporter
//! sends one small document every few seconds at most, the command line one
//! request per run, and a pooled connection that the peer has quietly closed
//! would turn into a spurious failure. The whole exchange — connecting, the
//! TLS handshake, sending, reading the answer — runs under one timeout.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The most of a backend's answer that [`HttpClient::post_json`] reads.
const MAX_REPORT_RESPONSE: usize = 64 * 1024;

/// The most of a ward server's answer that [`request`] reads.
const MAX_CLI_RESPONSE: usize = 64 << 20;

/// Why a request did not get an answer, or got a bad one.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid url {url:?}: {problem}")]
    BadUrl { url: String, problem: &'static str },
    #[error("invalid HTTP method {0:?}")]
    BadMethod(String),
    /// The token itself is never part of the message.
    #[error("the bearer token is not a valid HTTP header value")]
    BadToken,
    #[error("cannot read the CA file {}", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {} is not valid PEM", path.display())]
    CaPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the CA file {} holds no certificate", path.display())]
    CaEmpty { path: PathBuf },
    #[error("the CA file {} holds a certificate that cannot be a trust root", path.display())]
    CaCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot set up TLS")]
    TlsSetup(#[source] rustls::Error),
    #[error("cannot start the client's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot connect to {authority}")]
    Connect {
        authority: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The server's certificate was rejected: untrusted issuer, wrong name,
    /// expired. The cause says which.
    #[error("the TLS certificate of {authority} is not trusted")]
    Certificate {
        authority: String,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS handshake with {authority} failed")]
    Handshake {
        authority: String,
        #[source]
        source: rustls::Error,
    },
    #[error("no answer from {authority} within {ms} ms")]
    Timeout { authority: String, ms: u128 },
    #[error("exchange with {authority} failed")]
    Exchange {
        authority: String,
        #[source]
        source: BoxError,
    },
    #[error("{authority} answered more than {max} bytes")]
    TooLarge { authority: String, max: usize },
    #[error("{authority} answered HTTP {status}{}", body_suffix(.body))]
    Status {
        authority: String,
        status: u16,
        /// The start of the response body, on one line, for the log.
        body: String,
    },
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// An answer, whatever its status.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// An `Authorization: Bearer …` value. Marked sensitive for hyper, and its
/// `Debug` hides it, so that it cannot reach a log by accident.
#[derive(Clone)]
pub struct BearerToken(HeaderValue);

impl BearerToken {
    pub fn new(token: &str) -> Result<BearerToken, ClientError> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ClientError::BadToken)?;
        value.set_sensitive(true);
        Ok(BearerToken(value))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Checks an `http://` or `https://` URL: a host, a port from 1 to 65535 if
/// one is written, no credentials (they would end up in logs).
pub fn parse_url(url: &str) -> Result<Uri, ClientError> {
    let bad = |problem| ClientError::BadUrl {
        url: url.to_owned(),
        problem,
    };
    let (scheme, _) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Err(bad("the scheme must be http or https"));
    }
    // The parser below would reject them too, with a vaguer reason.
    if url
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_control())
    {
        return Err(bad("spaces and control characters are not allowed"));
    }
    let uri: Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in the url are not supported"));
    }
    if uri.host().is_none_or(|h| h.is_empty() || h == "[]") {
        return Err(bad("no host"));
    }
    // `Authority` keeps the port as text: "80a", "99999" or "[::1]x" parse.
    let port = match authority.as_str().rsplit_once(']') {
        Some((_, "")) => None,
        Some((_, after)) => Some(
            after
                .strip_prefix(':')
                .ok_or_else(|| bad("junk after ']'"))?,
        ),
        None => authority.as_str().rsplit_once(':').map(|(_, port)| port),
    };
    if let Some(port) = port
        && !port.is_empty()
        && !matches!(port.parse::<u16>(), Ok(1..))
    {
        return Err(bad("the port must be a number from 1 to 65535"));
    }
    // `http://host?q` has an empty path; the request line needs `/?q`.
    if let Some(query) = uri
        .path_and_query()
        .and_then(|p| p.as_str().strip_prefix('?'))
    {
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(
            format!("/?{query}")
                .parse()
                .map_err(|_| bad("not a valid URL"))?,
        );
        return Uri::from_parts(parts).map_err(|_| bad("not a valid URL"));
    }
    Ok(uri)
}

/// One request to send.
pub struct Outgoing<'a> {
    pub method: Method,
    pub url: &'a Uri,
    /// The content type and the body.
    pub body: Option<(&'a str, Bytes)>,
    pub bearer: Option<&'a BearerToken>,
}

/// A client with its trusted roots; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client that trusts the system's roots and, with `ca_file`, every
    /// certificate in that PEM file. Reads the files now: a missing or
    /// broken CA file is an error at start, not at the first request.
    pub fn new(ca_file: Option<&Path>) -> Result<HttpClient, ClientError> {
        let mut roots = RootCertStore::empty();
        // A system without a certificate store (a slim container) still
        // works with a configured CA file; unreadable entries are skipped.
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            tracing::debug!(errors = ?native.errors, "some system CA certificates are unreadable");
        }
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            add_pem_roots(&mut roots, path)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ClientError::TlsSetup)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let inner = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(HttpClient { inner })
    }

    /// Sends `req` and reads the whole answer, whatever its status. The
    /// whole exchange has `timeout`; an answer over `max_body` bytes is an
    /// error.
    pub async fn send(
        &self,
        req: Outgoing<'_>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, ClientError> {
        let authority = authority(req.url);
        let (status, body, cut) = self.exchange(req, timeout, max_body).await?;
        if cut {
            return Err(ClientError::TooLarge {
                authority,
                max: max_body,
            });
        }
        Ok(Response { status, body })
    }

    /// POSTs a JSON document and answers the status when it is 2xx; any
    /// other status is [`ClientError::Status`] with the start of the body.
    pub async fn post_json(
        &self,
        url: &Uri,
        json: Bytes,
        bearer: Option<&BearerToken>,
        timeout: Duration,
    ) -> Result<u16, ClientError> {
        let req = Outgoing {
            method: Method::POST,
            url,
            body: Some(("application/json", json)),
            bearer,
        };
        let (status, body, _) = self.exchange(req, timeout, MAX_REPORT_RESPONSE).await?;
        if (200..300).contains(&status) {
            return Ok(status);
        }
        Err(ClientError::Status {
            authority: authority(url),
            status,
            body: excerpt(&body),
        })
    }

    /// The status and up to `max_body` bytes of the body (and whether more
    /// came), under one deadline.
    async fn exchange(
        &self,
        req: Outgoing<'_>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<(u16, Vec<u8>, bool), ClientError> {
        let authority = authority(req.url);
        let mut builder = hyper::Request::builder()
            .method(req.method)
            .uri(req.url.clone())
            .header(
                header::USER_AGENT,
                concat!("ward/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = req.bearer {
            builder = builder.header(header::AUTHORIZATION, token.0.clone());
        }
        let body = match req.body {
            Some((content_type, bytes)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(body))
            .map_err(|e| ClientError::Exchange {
                authority: authority.clone(),
                source: e.into(),
            })?;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| classify(&authority, e))?;
            let status = response.status().as_u16();
            let (body, cut) = read_body(response.into_body(), max_body)
                .await
                .map_err(|e| ClientError::Exchange {
                    authority: authority.clone(),
                    source: e.into(),
                })?;
            Ok((status, body, cut))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                authority: authority.clone(),
                ms: timeout.as_millis(),
            })?
    }
}

/// Adds every certificate of a PEM file to `roots`.
fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> Result<(), ClientError> {
    let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
        path: path.to_owned(),
        source,
    })?;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|source| ClientError::CaPem {
            path: path.to_owned(),
            source,
        })?;
        roots
            .add(cert)
            .map_err(|source| ClientError::CaCertificate {
                path: path.to_owned(),
                source,
            })?;
        added += 1;
    }
    if added == 0 {
        return Err(ClientError::CaEmpty {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn authority(url: &Uri) -> String {
    url.authority().map_or_else(String::new, |a| a.to_string())
}

/// Names a failed request by its cause: a rejected certificate or handshake
/// (found inside the connector's I/O errors), an unreachable peer, or a
/// broken exchange.
fn classify(authority: &str, e: hyper_util::client::legacy::Error) -> ClientError {
    let authority = authority.to_owned();
    if let Some(tls) = find_rustls(&e).cloned() {
        return if matches!(tls, rustls::Error::InvalidCertificate(_)) {
            ClientError::Certificate {
                authority,
                source: tls,
            }
        } else {
            ClientError::Handshake {
                authority,
                source: tls,
            }
        };
    }
    if e.is_connect() {
        ClientError::Connect {
            authority,
            source: e,
        }
    } else {
        ClientError::Exchange {
            authority,
            source: e.into(),
        }
    }
}

/// The rustls error behind `e`, if any. `io::Error::source` skips the error
/// it wraps, so wrapped errors are opened explicitly.
fn find_rustls<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        && let Some(tls) = find_rustls(inner)
    {
        return Some(tls);
    }
    e.source().and_then(find_rustls)
}

/// Reads up to `max` bytes of `body`; says whether there was more.
async fn read_body(mut body: Incoming, max: usize) -> Result<(Vec<u8>, bool), hyper::Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let room = max - out.len();
        if data.len() > room {
            out.extend_from_slice(&data[..room]);
            return Ok((out, true));
        }
        out.extend_from_slice(&data);
    }
    Ok((out, false))
}

/// The start of a response body, on one line.
fn excerpt(body: &[u8]) -> String {
    const MAX_CHARS: usize = 200;
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_CHARS)
        .collect()
}

/// The command line's request: `method` on `base` (a ward server's URL,
/// perhaps with a path prefix) followed by `path`, with `body` and its
/// content type. Blocking: it runs the exchange on a runtime of its own.
/// Any status is an answer; only a failed exchange is an error.
pub fn request(
    method: &str,
    base: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let url = parse_url(&join(base, path))?;
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| ClientError::BadMethod(method.into()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    runtime.block_on(async {
        let client = HttpClient::new(None)?;
        let req = Outgoing {
            method,
            url: &url,
            body: body.map(|(content_type, bytes)| (content_type, Bytes::copy_from_slice(bytes))),
            bearer: None,
        };
        client.send(req, timeout, MAX_CLI_RESPONSE).await
    })
}

/// `http://host/prefix/` + `/v1/models` → `http://host/prefix/v1/models`.
fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::testing::{Answer, Receiver, TestCa};
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn parses_urls() {
        let u = parse_url("http://backend:8000/api/internal/runtime/register").expect("valid");
        assert_eq!(
            (u.host(), u.port_u16(), u.path()),
            (
                Some("backend"),
                Some(8000),
                "/api/internal/runtime/register"
            )
        );
        let u = parse_url("HTTPS://example.org").expect("valid");
        assert_eq!(
            (u.host(), u.port_u16(), u.path()),
            (Some("example.org"), None, "/")
        );
        let u = parse_url("http://example.org:80?x=1#frag").expect("valid");
        assert_eq!(u.path_and_query().map(|p| p.as_str()), Some("/?x=1"));
        let u = parse_url("http://[::1]:9000/r").expect("valid");
        assert_eq!((u.host(), u.port_u16()), (Some("[::1]"), Some(9000)));
        assert_eq!(
            join("http://localhost/ward/", "/v1/models"),
            "http://localhost/ward/v1/models"
        );
        assert_eq!(
            join("http://127.0.0.1:8080", "/v1/models"),
            "http://127.0.0.1:8080/v1/models"
        );
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "backend/register",
            "ftp://backend/",
            "http://",
            "http:///path",
            "http://:8080/",
            "http://user:pw@backend/",
            "http://backend:0/",
            "http://backend:99999/",
            "http://backend:80a/",
            "http://[::1/",
            "http://[::1]x/",
            "http://backend/a b",
            "http://backend/a\r\nX-Evil: 1",
        ] {
            assert!(
                matches!(parse_url(bad), Err(ClientError::BadUrl { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn the_token_never_shows() {
        let token = BearerToken::new("s3cret-token").expect("valid token");
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(matches!(
            BearerToken::new("two\nlines"),
            Err(ClientError::BadToken)
        ));
        assert!(!ClientError::BadToken.to_string().contains("two"));
    }

    #[test]
    fn excerpts_are_one_short_line() {
        assert_eq!(excerpt(b"  redis\r\nis down\n"), "redis  is down");
        assert_eq!(excerpt(&[b'x'; 1000]).len(), 200);
    }

    fn client() -> HttpClient {
        HttpClient::new(None).expect("client")
    }

    #[tokio::test]
    async fn posts_json_and_accepts_2xx() {
        let mut rx = Receiver::plain(Answer::status(204)).await;
        let token = BearerToken::new("abc").expect("token");
        let status = client()
            .post_json(
                &rx.url(),
                Bytes::from_static(br#"{"a":1}"#),
                Some(&token),
                TIMEOUT,
            )
            .await
            .expect("2xx");
        assert_eq!(status, 204);
        let req = rx.next().await;
        assert_eq!(req.request_line, "POST /register HTTP/1.1");
        assert_eq!(req.header("host"), Some(rx.authority().as_str()));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.header("content-length"), Some("7"));
        assert_eq!(req.header("authorization"), Some("Bearer abc"));
        assert_eq!(
            req.header("user-agent"),
            Some(concat!("ward/", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(req.body, br#"{"a":1}"#);
    }

    #[tokio::test]
    async fn reports_error_statuses_with_the_body() {
        let rx = Receiver::plain(Answer::raw(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 14\r\n\r\nredis is down\n",
        ))
        .await;
        let err = client()
            .post_json(&rx.url(), Bytes::from_static(b"{}"), None, TIMEOUT)
            .await
            .expect_err("500");
        match &err {
            ClientError::Status { status, body, .. } => {
                assert_eq!(*status, 500);
                assert_eq!(body, "redis is down");
            }
            other => panic!("expected a status error, got {other:?}"),
        }
        assert!(
            err.to_string()
                .ends_with("answered HTTP 500: redis is down")
        );
    }

    #[tokio::test]
    async fn rejects_garbage_answers() {
        let rx = Receiver::plain(Answer::raw("garbage\r\n\r\n")).await;
        let err = client()
            .post_json(&rx.url(), Bytes::from_static(b"{}"), None, TIMEOUT)
            .await
            .expect_err("garbage");
        assert!(matches!(err, ClientError::Exchange { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn times_out_when_the_peer_never_answers() {
        let rx = Receiver::plain(Answer::Silent).await;
        let started = std::time::Instant::now();
        let err = client()
            .post_json(
                &rx.url(),
                Bytes::from_static(b"{}"),
                None,
                Duration::from_millis(200),
            )
            .await
            .expect_err("no answer");
        assert!(
            matches!(err, ClientError::Timeout { ms: 200, .. }),
            "{err:?}"
        );
        assert!(started.elapsed() < TIMEOUT);
    }

    #[tokio::test]
    async fn reports_refused_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        let url = parse_url(&format!("http://127.0.0.1:{port}/")).expect("valid url");
        let err = client()
            .post_json(&url, Bytes::from_static(b"{}"), None, TIMEOUT)
            .await
            .expect_err("refused");
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        let chain = crate::errors::error_chain(&err);
        assert!(chain.contains("refused"), "{chain}");
    }

    #[tokio::test]
    async fn posts_over_https_to_a_root_from_the_ca_file() {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = ca.write_pem(dir.path());
        let mut rx = Receiver::tls(&ca, Answer::status(200)).await;
        let https = HttpClient::new(Some(&ca_file)).expect("client");
        let status = https
            .post_json(&rx.url(), Bytes::from_static(b"{}"), None, TIMEOUT)
            .await
            .expect("2xx over TLS");
        assert_eq!(status, 200);
        assert_eq!(rx.next().await.body, b"{}");
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_named() {
        let ca = TestCa::new();
        let rx = Receiver::tls(&ca, Answer::status(200)).await;
        let err = client()
            .post_json(&rx.url(), Bytes::from_static(b"{}"), None, TIMEOUT)
            .await
            .expect_err("untrusted");
        assert!(
            matches!(
                &err,
                ClientError::Certificate {
                    source: rustls::Error::InvalidCertificate(
                        rustls::CertificateError::UnknownIssuer
                    ),
                    ..
                }
            ),
            "{err:?}"
        );
        let chain = crate::errors::error_chain(&err);
        assert!(
            chain.contains("certificate") && chain.contains("not trusted"),
            "{chain}"
        );
    }

    #[test]
    fn ca_files_are_checked_when_the_client_is_built() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            HttpClient::new(Some(&missing)),
            Err(ClientError::CaFile { .. })
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").expect("write");
        let err = HttpClient::new(Some(&empty)).expect_err("no certificate");
        assert!(matches!(err, ClientError::CaEmpty { .. }), "{err:?}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").expect("write");
        let err = HttpClient::new(Some(&broken)).expect_err("broken");
        assert!(matches!(err, ClientError::CaPem { .. }), "{err:?}");
    }

    #[test]
    fn the_blocking_request_reads_any_status() {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let rx = runtime.block_on(Receiver::plain(Answer::raw(
            "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )));
        let base = format!("http://{}/", rx.authority());
        let resp = request("GET", &base, "/v1/models", None, TIMEOUT).expect("an answer");
        assert_eq!(resp.status, 404);
        assert_eq!(resp.body, b"abcde");
    }
}
