//! The JSON Web Key Sets RequestAuthentications point to (`jwksUri`, or the issuer's OpenID discovery
//! document when a rule gives neither `jwks` nor `jwksUri`), fetched by weftd and inlined into the
//! proxies' `jwt_authn` filters, as istiod does by default (`PILOT_JWT_ENABLE_REMOTE_JWKS=false`): the
//! proxies then need no route to the identity provider.
//!
//! A [`Fetcher`] task owns the fetches; weftd's config loop holds the [`Jwks`] handle. The loop tells
//! it which sources the config names ([`Jwks::want`], never waiting), and reads the keys it has when it
//! builds a model ([`Jwks::keys`]). When the sources change they are fetched at once, each in its own
//! task with its rule's `timeout` (5 s by default), so a slow identity provider never holds a push; the
//! keys are
//! refreshed every 20 minutes (Istio's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`), and a failed fetch is
//! retried after a minute, then two, four, … up to the refresh interval (Istio's back-off). A fetch
//! that fails keeps the last good keys and logs an error naming the issuer and the URI; when the keys
//! change, the loop builds a new model generation so the proxies get them. Until a source's first
//! fetch succeeds the translation inlines a key nobody holds ([`crate::authn::STAND_IN_JWKS`]), as
//! istiod does, so every token of that issuer is refused.
//!
//! The HTTP client is hyper's, one connection per fetch (a fetch every 20 minutes per source), HTTPS
//! with rustls and the roots of the system bundle (`/etc/ssl/certs/ca-certificates.crt`). As in
//! istiod, redirects are not followed and link-local addresses (cloud metadata services) are refused.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, Instrument};

/// How often keys are fetched again (Istio: `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`, 20 minutes).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(20 * 60);
/// A rule's fetch timeout when it sets none (RequestAuthentication's `timeout` default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first retry after a failure, doubling after each further one up to the refresh interval (Istio:
/// `JwtPubKeyRefreshIntervalOnFailure`).
pub const FIRST_RETRY: Duration = Duration::from_secs(60);
/// The largest JWKS or discovery document read.
pub const MAX_DOCUMENT: usize = 1 << 20;
/// The system's CA bundle (Debian's `ca-certificates`), whose roots verify `https` sources.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// The rule's `issuer`.
    pub issuer: String,
    /// The rule's `jwksUri`; `None`: the `jwks_uri` of the issuer's OpenID discovery document.
    pub jwks_uri: Option<String>,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.jwks_uri {
            Some(u) => write!(f, "issuer {:?} from {u}", self.issuer),
            None => write!(f, "issuer {:?} from its OpenID discovery", self.issuer),
        }
    }
}

/// What weftd has of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The last JWKS fetched (a JSON object with a `keys` array), `None` until a fetch succeeds.
    pub jwks: Option<Arc<str>>,
    /// Why the last fetch failed, with the issuer and URI; `None` after a success.
    pub error: Option<String>,
}

/// The keys of every source the config names: an immutable snapshot, replaced as fetches complete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// Increases whenever a source's JWKS changes (not when only an error does): the config loop
    /// pushes a new model generation when it differs from the model's.
    pub version: u64,
    /// By source.
    pub entries: BTreeMap<Source, Entry>,
}

impl Keys {
    /// The last good JWKS of `source`.
    pub fn jwks(&self, source: &Source) -> Option<&str> {
        self.entries.get(source)?.jwks.as_deref()
    }

    /// Why the last fetch of `source` failed.
    pub fn error(&self, source: &Source) -> Option<&str> {
        self.entries.get(source)?.error.as_deref()
    }
}

/// The sources the config names, each with its fetch timeout.
pub type Wanted = BTreeMap<Source, Duration>;

/// The fetcher's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often keys are fetched again.
    pub refresh: Duration,
    /// The first retry after a failure.
    pub first_retry: Duration,
    /// PEM bundle of the roots that verify `https` sources.
    pub roots: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            refresh: DEFAULT_REFRESH,
            first_retry: FIRST_RETRY,
            roots: PathBuf::from(SYSTEM_ROOTS),
        }
    }
}

/// The handle weftd's config loop holds.
#[derive(Debug)]
pub struct Jwks {
    wanted: watch::Sender<Wanted>,
    keys: watch::Receiver<Arc<Keys>>,
    now: Arc<Notify>,
}

impl Jwks {
    /// Makes the handle and its fetcher, which the caller runs ([`Fetcher::run`]).
    pub fn new(settings: Settings) -> (Jwks, Fetcher) {
        let (wanted_tx, wanted_rx) = watch::channel(Wanted::new());
        let (keys_tx, keys_rx) = watch::channel(Arc::new(Keys::default()));
        let now = Arc::new(Notify::new());
        (
            Jwks {
                wanted: wanted_tx,
                keys: keys_rx,
                now: now.clone(),
            },
            Fetcher {
                settings,
                wanted: wanted_rx,
                keys: keys_tx,
                now,
            },
        )
    }

    /// Sets the sources the config names. When they differ from the last set, every one is fetched
    /// again at once and those no longer named are forgotten; an equal set changes nothing. Returns at
    /// once.
    pub fn want(&self, sources: Wanted) {
        self.wanted.send_if_modified(|w| {
            if *w == sources {
                return false;
            }
            *w = sources;
            true
        });
    }

    /// The keys fetched so far.
    pub fn keys(&self) -> Arc<Keys> {
        self.keys.borrow().clone()
    }

    /// A receiver that sees every new [`Keys`] (a change of keys or of an error).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Keys>> {
        self.keys.clone()
    }

    /// Fetches every source again now (the refresh schedule starts over).
    pub fn refresh_now(&self) {
        self.now.notify_one();
    }
}

/// The task that fetches.
#[derive(Debug)]
pub struct Fetcher {
    settings: Settings,
    wanted: watch::Receiver<Wanted>,
    keys: watch::Sender<Arc<Keys>>,
    now: Arc<Notify>,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The fetch of a source failed.
    #[error("cannot fetch the JWKS of {source_name}")]
    Source {
        /// Issuer and URI.
        source_name: Source,
        /// What failed.
        #[source]
        cause: GetError,
    },
    /// The document is not a JWKS.
    #[error("the JWKS of {source_name} is not a JSON Web Key Set: {why}")]
    NotJwks {
        /// Issuer and URI.
        source_name: Source,
        /// What is wrong.
        why: &'static str,
    },
    /// The discovery document has no usable `jwks_uri`.
    #[error("the OpenID discovery document of issuer {issuer:?} at {uri} has no jwks_uri string")]
    Discovery {
        /// The issuer.
        issuer: String,
        /// The discovery document's URL.
        uri: String,
    },
}

impl FetchError {
    /// The error and its causes, joined with `": "` (for the log and `/debug`).
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}

/// Why one GET failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Not an `http://` or `https://` URL with a host.
    #[error("{0:?} is not an http:// or https:// URL")]
    Url(String),
    /// The host does not resolve.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The host.
        host: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Every address of the host is refused.
    #[error("{host} resolves only to link-local addresses ({addrs}), which weftd does not fetch from (cloud metadata services live there)")]
    Blocked {
        /// The host.
        host: String,
        /// Its addresses.
        addrs: String,
    },
    /// No connection.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No roots to verify an `https` source with.
    #[error("no CA roots from {path} to verify https sources")]
    NoRoots {
        /// The bundle.
        path: PathBuf,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {host} failed")]
    Tls {
        /// The host.
        host: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    /// A status other than 2xx.
    #[error("status {0}")]
    Status(u16),
    /// The body was larger than allowed or broke off.
    #[error("body larger than {MAX_DOCUMENT} bytes or cut off")]
    Body,
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What a fetch task reports.
type Done = (Source, Result<Arc<str>, FetchError>);

impl Fetcher {
    /// Fetches until `shutdown` changes (or the handle is dropped).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let client = Arc::new(Client::new(&self.settings.roots).await);
        // The next fetch of each wanted source; absent while one is running.
        let mut due: BTreeMap<Source, Instant> = BTreeMap::new();
        let mut failures: BTreeMap<Source, u32> = BTreeMap::new();
        let mut running: BTreeSet<Source> = BTreeSet::new();
        let mut tasks: JoinSet<Done> = JoinSet::new();
        let mut wanted = Wanted::new();
        self.wanted.mark_changed();
        loop {
            let now = Instant::now();
            let ready: Vec<Source> = due
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(s, _)| s.clone())
                .collect();
            for s in ready {
                due.remove(&s);
                let timeout = wanted.get(&s).copied().unwrap_or(DEFAULT_TIMEOUT);
                running.insert(s.clone());
                let c = client.clone();
                let span = tracing::info_span!("jwks_fetch", issuer = %s.issuer, uri = s.jwks_uri.as_deref().unwrap_or("(discovery)"));
                tasks.spawn(async move { fetch(&c, s, timeout).await }.instrument(span));
            }
            let next = due.values().min().copied();
            tokio::select! {
                // Each branch is cancellation-safe: watch and Notify lose nothing, `join_next` and
                // the sleep are only polled.
                changed = self.wanted.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    wanted = self.wanted.borrow_and_update().clone();
                    let mut keys = (**self.keys.borrow()).clone();
                    keys.entries.retain(|s, _| wanted.contains_key(s));
                    due.retain(|s, _| wanted.contains_key(s));
                    failures.retain(|s, _| wanted.contains_key(s));
                    // The sources the config names changed: fetch them all again now (the others
                    // were fetched for the same config; a new rule may be the operator's answer to
                    // rotated keys).
                    for s in wanted.keys().filter(|s| !running.contains(*s)) {
                        due.insert(s.clone(), Instant::now());
                    }
                    self.publish(keys);
                }
                _ = self.now.notified() => {
                    for s in wanted.keys().filter(|s| !running.contains(*s)) {
                        due.insert(s.clone(), Instant::now());
                    }
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    let Ok((s, result)) = done else { continue };
                    running.remove(&s);
                    if !wanted.contains_key(&s) {
                        continue;
                    }
                    let mut keys = (**self.keys.borrow()).clone();
                    let entry = keys.entries.entry(s.clone()).or_default();
                    match result {
                        Ok(jwks) => {
                            failures.remove(&s);
                            entry.error = None;
                            if entry.jwks.as_deref() != Some(&*jwks) {
                                info!(issuer = %s.issuer, uri = s.jwks_uri.as_deref().unwrap_or("(discovery)"), "JWKS fetched");
                                entry.jwks = Some(jwks);
                                keys.version += 1;
                            }
                            due.insert(s, Instant::now() + self.settings.refresh);
                        }
                        Err(e) => {
                            let chain = e.chain();
                            let kept = entry.jwks.is_some();
                            error!(issuer = %s.issuer, uri = s.jwks_uri.as_deref().unwrap_or("(discovery)"), error = %chain, kept_last_keys = kept, "JWKS fetch failed");
                            entry.error = Some(chain);
                            let n = failures.entry(s.clone()).or_insert(0);
                            let wait = self
                                .settings
                                .first_retry
                                .saturating_mul(1 << (*n).min(16))
                                .min(self.settings.refresh);
                            *n += 1;
                            due.insert(s, Instant::now() + wait);
                        }
                    }
                    self.publish(keys);
                }
                _ = sleep_until(next) => {}
                _ = shutdown.changed() => break,
            }
        }
        tasks.shutdown().await;
    }

    fn publish(&self, keys: Keys) {
        self.keys.send_if_modified(|k| {
            if **k == keys {
                return false;
            }
            *k = Arc::new(keys);
            true
        });
    }
}

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One source's JWKS: its URI, or the one its issuer's discovery document names; checked to be a JSON
/// object with a `keys` array (Istio's check), all within `timeout`.
async fn fetch(client: &Client, source: Source, timeout: Duration) -> Done {
    let result = match tokio::time::timeout(timeout, fetch_inner(client, &source)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Source {
            source_name: source.clone(),
            cause: GetError::Timeout(timeout),
        }),
    };
    (source, result)
}

async fn fetch_inner(client: &Client, source: &Source) -> Result<Arc<str>, FetchError> {
    let failed = |cause| FetchError::Source {
        source_name: source.clone(),
        cause,
    };
    let uri = match &source.jwks_uri {
        Some(u) => u.clone(),
        None => {
            let doc_uri = format!(
                "{}/.well-known/openid-configuration",
                source.issuer.trim_end_matches('/')
            );
            let doc = client.get(&doc_uri).await.map_err(failed)?;
            let jwks_uri = serde_json::from_slice::<serde_json::Value>(&doc)
                .ok()
                .and_then(|v| v.get("jwks_uri")?.as_str().map(str::to_string));
            jwks_uri.ok_or_else(|| FetchError::Discovery {
                issuer: source.issuer.clone(),
                uri: doc_uri,
            })?
        }
    };
    let body = client.get(&uri).await.map_err(failed)?;
    let not_jwks = |why| FetchError::NotJwks {
        source_name: source.clone(),
        why,
    };
    let text = std::str::from_utf8(&body).map_err(|_| not_jwks("not UTF-8"))?;
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|_| not_jwks("not JSON"))?;
    match doc.get("keys") {
        Some(serde_json::Value::Array(_)) => Ok(Arc::from(text)),
        Some(_) => Err(not_jwks("\"keys\" is not an array")),
        None => Err(not_jwks("no \"keys\"")),
    }
}

/// GETs over HTTP/1.1, one connection per request.
struct Client {
    /// `None` when the bundle could not be read (`https` sources then fail, naming it).
    tls: Option<tokio_rustls::TlsConnector>,
    roots: PathBuf,
}

impl Client {
    async fn new(roots: &std::path::Path) -> Client {
        let path = roots.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || load_roots(&path))
            .await
            .unwrap_or_else(|e| Err(format!("loading task failed: {e}")));
        let tls = match loaded {
            Ok(store) => {
                match rustls::ClientConfig::builder_with_provider(weft_http::tls::provider())
                    .with_safe_default_protocol_versions()
                {
                    Ok(b) => {
                        let mut c = b.with_root_certificates(store).with_no_client_auth();
                        c.alpn_protocols = vec![b"http/1.1".to_vec()];
                        Some(tokio_rustls::TlsConnector::from(Arc::new(c)))
                    }
                    Err(e) => {
                        error!(error = %e, "no TLS client for https JWKS sources");
                        None
                    }
                }
            }
            Err(why) => {
                info!(bundle = %roots.display(), reason = %why, "no CA roots; https JWKS sources will fail");
                None
            }
        };
        Client {
            tls,
            roots: roots.to_path_buf(),
        }
    }

    /// The body of a 2xx answer to `GET uri`.
    async fn get(&self, uri: &str) -> Result<Bytes, GetError> {
        let bad = || GetError::Url(uri.to_string());
        let parsed: http::Uri = uri.parse().map_err(|_| bad())?;
        let https = match parsed.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        let host = parsed.host().ok_or_else(bad)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = parsed
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let authority = parsed.authority().ok_or_else(bad)?.as_str().to_string();
        let tcp = connect(&host, port).await?;
        let _ = tcp.set_nodelay(true);
        if https {
            let tls = self.tls.as_ref().ok_or_else(|| GetError::NoRoots {
                path: self.roots.clone(),
            })?;
            let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| bad())?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|source| GetError::Tls { host, source })?;
            exchange(stream, &authority, &path).await
        } else {
            exchange(tcp, &authority, &path).await
        }
    }
}

/// The roots of a PEM bundle.
fn load_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .collect();
    let mut store = rustls::RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err("no certificate in the bundle".into());
    }
    Ok(store)
}

/// Whether weftd refuses to fetch from `ip`: link-local addresses, where cloud metadata services answer
/// (istiod refuses them too).
fn blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
    }
}

/// A connection to the first address of `host` that is allowed and answers.
async fn connect(host: &str, port: u16) -> Result<tokio::net::TcpStream, GetError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| GetError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| !blocked(a.ip())).collect();
    if allowed.is_empty() {
        let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        return Err(GetError::Blocked {
            host: host.to_string(),
            addrs: list.join(", "),
        });
    }
    let mut last = None;
    for addr in allowed {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(source) => last = Some(GetError::Connect { addr, source }),
        }
    }
    Err(last.unwrap_or(GetError::Body))
}

/// One GET on a fresh connection; 2xx only, the body bounded. The connection is driven beside the
/// request until both end: a server that closes right after its answer (HTTP/1.0 style) ends the
/// connection before the body has been read out of it, so its end must not cut the request short.
async fn exchange<S>(io: S, authority: &str, path: &str) -> Result<Bytes, GetError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(GetError::Http)?;
    let request = async move {
        let req = http::Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::USER_AGENT, "weftd")
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|_| GetError::Url(format!("{authority}{path}")))?;
        let resp = send.send_request(req).await.map_err(GetError::Http)?;
        if !resp.status().is_success() {
            return Err(GetError::Status(resp.status().as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT)
            .collect()
            .await
            .map_err(|_| GetError::Body)?
            .to_bytes();
        // `send` goes here, which lets the connection close once it is idle.
        Ok(body)
    };
    let (result, _) = tokio::join!(request, conn);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    const JWKS_A: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"a","x":"AA","y":"AA"}]}"#;
    const JWKS_B: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"b","x":"BB","y":"BB"}]}"#;

    /// A JWKS server on 127.0.0.1:0 serving `/jwks` (the current body, or 503 when `down`) and an
    /// OpenID discovery document pointing to it.
    struct Idp {
        addr: SocketAddr,
        body: Arc<std::sync::Mutex<&'static str>>,
        down: Arc<AtomicBool>,
    }

    impl Idp {
        async fn start() -> Idp {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let body = Arc::new(std::sync::Mutex::new(JWKS_A));
            let down = Arc::new(AtomicBool::new(false));
            let (b, d) = (body.clone(), down.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (b, d) = (b.clone(), d.clone());
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(
                            move |req: http::Request<hyper::body::Incoming>| {
                                let (b, d) = (b.clone(), d.clone());
                                async move {
                                    let (status, text) = if d.load(Ordering::SeqCst) {
                                        (503, "down".to_string())
                                    } else if req.uri().path()
                                        == "/.well-known/openid-configuration"
                                    {
                                        (
                                            200,
                                            format!(
                                                r#"{{"issuer":"x","jwks_uri":"http://{addr}/jwks"}}"#
                                            ),
                                        )
                                    } else if req.uri().path() == "/jwks" {
                                        (200, b.lock().expect("lock").to_string())
                                    } else {
                                        (404, String::new())
                                    };
                                    let resp = http::Response::builder()
                                        .status(status)
                                        .body(http_body_util::Full::new(Bytes::from(text)))
                                        .expect("response");
                                    Ok::<_, std::convert::Infallible>(resp)
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
            Idp { addr, body, down }
        }

        fn uri(&self) -> String {
            format!("http://{}/jwks", self.addr)
        }
    }

    /// The first keys `rx` sees that satisfy `ok`; every wait is on a change, bounded by a deadline.
    async fn until(rx: &mut watch::Receiver<Arc<Keys>>, ok: impl Fn(&Keys) -> bool) -> Arc<Keys> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let k = rx.borrow_and_update().clone();
                if ok(&k) {
                    return k;
                }
                rx.changed().await.expect("fetcher alive");
            }
        })
        .await
        .expect("keys in time")
    }

    fn settings() -> Settings {
        Settings {
            // Long: refreshes in these tests are asked for (`refresh_now`), never waited for.
            refresh: Duration::from_secs(3600),
            first_retry: Duration::from_secs(3600),
            roots: PathBuf::from("/nonexistent/roots.pem"),
        }
    }

    #[tokio::test]
    async fn keys_are_fetched_cached_and_kept_when_the_idp_goes_down() {
        let idp = Idp::start().await;
        let (jwks, fetcher) = Jwks::new(settings());
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(fetcher.run(stop));
        let source = Source {
            issuer: "https://idp.example".into(),
            jwks_uri: Some(idp.uri()),
        };
        let mut rx = jwks.subscribe();
        jwks.want([(source.clone(), DEFAULT_TIMEOUT)].into());
        let k = until(&mut rx, |k| k.jwks(&source).is_some()).await;
        assert_eq!(k.jwks(&source), Some(JWKS_A));
        assert_eq!(k.version, 1);

        // The identity provider goes down: the refresh fails, the keys stay, the error names the
        // issuer and the URI.
        idp.down.store(true, Ordering::SeqCst);
        jwks.refresh_now();
        let k = until(&mut rx, |k| k.error(&source).is_some()).await;
        assert_eq!(k.jwks(&source), Some(JWKS_A), "the last good keys are kept");
        assert_eq!(k.version, 1, "no new keys: nothing to push");
        // And the proxies keep getting them.
        let rule = weft_api::security::request_authentication::JwtRule {
            issuer: source.issuer.clone(),
            jwks_uri: source.jwks_uri.clone(),
            ..Default::default()
        };
        let filter = crate::authn::jwt_authentication(&[&rule], &k).expect("a filter");
        let inlined = match &filter.providers["origins-0"].jwks_source_specifier {
            Some(weft_xds::pb::envoy::extensions::filters::http::jwt_authn::v3::jwt_provider::JwksSourceSpecifier::LocalJwks(d)) => d.specifier.clone(),
            _ => None,
        };
        assert_eq!(
            inlined,
            Some(
                weft_xds::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                    JWKS_A.into()
                )
            )
        );
        assert_eq!(
            k.error(&source),
            Some(
                format!(
                    "cannot fetch the JWKS of issuer \"https://idp.example\" from {}: status 503",
                    idp.uri()
                )
                .as_str()
            )
        );

        // Back, with rotated keys: they replace the old ones and the error is gone.
        *idp.body.lock().expect("lock") = JWKS_B;
        idp.down.store(false, Ordering::SeqCst);
        jwks.refresh_now();
        let k = until(&mut rx, |k| k.jwks(&source) == Some(JWKS_B)).await;
        assert_eq!((k.version, k.error(&source)), (2, None));

        // Forgotten when no rule names it.
        jwks.want(Wanted::new());
        until(&mut rx, |k| k.entries.is_empty()).await;
        stop_tx.send_replace(true);
        task.await.expect("fetcher ends");
    }

    #[tokio::test]
    async fn sources_that_never_answer_fail_naming_issuer_uri_and_reason() {
        let idp = Idp::start().await;
        let (jwks, fetcher) = Jwks::new(settings());
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(fetcher.run(stop));
        // A port nothing listens on (bound, then closed), a document that is no JWKS, an https source
        // without roots, a link-local host, a timeout, and discovery.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_addr = silent.local_addr().expect("addr");
        let src = |issuer: &str, uri: Option<String>| Source {
            issuer: issuer.into(),
            jwks_uri: uri,
        };
        let cases = [
            (
                src("refused", Some(format!("http://{closed}/jwks"))),
                format!("cannot fetch the JWKS of issuer \"refused\" from http://{closed}/jwks: cannot connect to {closed}: "),
            ),
            (
                src("notjwks", Some(format!("http://{}/.well-known/openid-configuration", idp.addr))),
                format!("the JWKS of issuer \"notjwks\" from http://{}/.well-known/openid-configuration is not a JSON Web Key Set: no \"keys\"", idp.addr),
            ),
            (
                src("tls", Some(format!("https://{}/jwks", idp.addr))),
                format!("cannot fetch the JWKS of issuer \"tls\" from https://{}/jwks: no CA roots from /nonexistent/roots.pem to verify https sources", idp.addr),
            ),
            (
                src("metadata", Some("http://169.254.169.254/jwks".into())),
                "cannot fetch the JWKS of issuer \"metadata\" from http://169.254.169.254/jwks: 169.254.169.254 resolves only to link-local addresses (169.254.169.254), which weftd does not fetch from (cloud metadata services live there)".into(),
            ),
            (
                src("slow", Some(format!("http://{silent_addr}/jwks"))),
                format!("cannot fetch the JWKS of issuer \"slow\" from http://{silent_addr}/jwks: no answer within 200ms"),
            ),
        ];
        let mut wanted: Wanted = cases
            .iter()
            .map(|(s, _)| (s.clone(), Duration::from_millis(200)))
            .collect();
        let discovered = src(&format!("http://{}", idp.addr), None);
        wanted.insert(discovered.clone(), DEFAULT_TIMEOUT);
        let mut rx = jwks.subscribe();
        jwks.want(wanted);
        let k = until(&mut rx, |k| {
            cases.iter().all(|(s, _)| k.error(s).is_some()) && k.jwks(&discovered).is_some()
        })
        .await;
        for (s, want) in &cases {
            let got = k.error(s).expect("an error");
            assert!(got.starts_with(want.as_str()), "{s}: {got}");
            assert!(k.jwks(s).is_none());
        }
        assert_eq!(k.jwks(&discovered), Some(JWKS_A), "found through discovery");
        drop(silent);
    }

    #[tokio::test]
    async fn a_server_that_closes_after_its_answer_is_read_whole() {
        // Python's http.server and other HTTP/1.0 servers: the answer, then the connection closed.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{JWKS_A}",
                    JWKS_A.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        let client = Client::new(std::path::Path::new("/nonexistent")).await;
        for _ in 0..20 {
            let body = client
                .get(&format!("http://{addr}/jwks"))
                .await
                .expect("the whole body");
            assert_eq!(&body[..], JWKS_A.as_bytes());
        }
    }

    #[test]
    fn link_local_addresses_are_refused() {
        for (ip, refused) in [
            ("169.254.169.254", true),
            ("fe80::1", true),
            ("::ffff:169.254.1.1", true),
            ("127.0.0.1", false),
            ("10.0.0.1", false),
            ("::1", false),
        ] {
            assert_eq!(blocked(ip.parse().expect("ip")), refused, "{ip}");
        }
    }
}
