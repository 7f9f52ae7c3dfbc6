//! Test-only peers for the client and the reporter: a loopback HTTP or HTTPS
//! receiver that records every request and answers what the test says, and
//! a throwaway CA, made at run time, that signs the receiver's certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use hyper::Uri;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the receiver answers to each request.
#[derive(Clone)]
pub enum Answer {
    /// `HTTP/1.1 <status>` with an empty body; the test may change the
    /// status while the receiver runs.
    Status(Arc<AtomicU16>),
    /// These bytes, as they are.
    Raw(&'static str),
    /// Nothing: the connection stays open and silent.
    Silent,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer::Status(Arc::new(AtomicU16::new(status)))
    }

    pub fn raw(text: &'static str) -> Answer {
        Answer::Raw(text)
    }

    fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Answer::Status(code) => Some(
                format!(
                    "HTTP/1.1 {} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    code.load(Ordering::SeqCst)
                )
                .into_bytes(),
            ),
            Answer::Raw(text) => Some(text.as_bytes().to_vec()),
            Answer::Silent => None,
        }
    }
}

/// One request as it arrived.
#[derive(Debug)]
pub struct Received {
    pub request_line: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A throwaway CA and a certificate for 127.0.0.1 that it signed.
pub struct TestCa {
    ca_pem: String,
    leaf: CertificateDer<'static>,
    leaf_key: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ward test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf certificate");
        TestCa {
            ca_pem: ca.pem(),
            leaf: leaf.der().clone(),
            leaf_key: leaf_key.serialize_der(),
        }
    }

    /// Writes the CA's certificate as `dir/ca.pem`.
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write the CA file");
        path
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf.clone()], key)
            .expect("server certificate");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// A loopback server on port 0; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    scheme: &'static str,
    requests: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn plain(answer: Answer) -> Receiver {
        Receiver::start(None, answer).await
    }

    pub async fn tls(ca: &TestCa, answer: Answer) -> Receiver {
        Receiver::start(Some(ca.acceptor()), answer).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>, answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (tx, requests) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            // Silent connections are kept here until the receiver goes.
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                match &tls {
                    None => {
                        if let Some(stream) = handle(tcp, &answer, &tx).await {
                            held.push(Box::new(stream) as Box<dyn Send>);
                        }
                    }
                    // A client that rejects the certificate ends here.
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await
                            && let Some(stream) = handle(stream, &answer, &tx).await
                        {
                            held.push(Box::new(stream));
                        }
                    }
                }
            }
        });
        Receiver {
            addr,
            scheme,
            requests,
            task,
        }
    }

    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    pub fn url_string(&self) -> String {
        format!("{}://{}/register", self.scheme, self.addr)
    }

    pub fn url(&self) -> Uri {
        self.url_string().parse().expect("a valid url")
    }

    /// The next request, within five seconds.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(5), self.requests.recv())
            .await
            .expect("a request in time")
            .expect("the receiver runs")
    }

    /// A request that arrives within `wait`, if any.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Received> {
        tokio::time::timeout(wait, self.requests.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request, records it and answers; hands the stream back when
/// the answer is silence.
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    answer: &Answer,
    tx: &mpsc::UnboundedSender<Received>,
) -> Option<S> {
    let request = read_request(&mut stream).await?;
    let _ = tx.send(request);
    let Some(bytes) = answer.bytes() else {
        return Some(stream);
    };
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
    None
}

async fn read_request(stream: &mut (impl AsyncRead + Unpin)) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received {
        request_line,
        headers,
        body,
    })
}
