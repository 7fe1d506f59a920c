//! Outbound HTTP in one place: one client, timeouts, no automatic redirects, bounded answers, and
//! `Retry-After` read the way real servers send it.

use super::request::UpstreamRequest;
use crate::config::UpstreamSettings;
use crate::domain::secret::Secret;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// Largest upstream answer read for a kick-off or status call; manifests are small.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The shared client for every upstream.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    /// For kick-offs and status calls, one per calling thread.
    client: PerThread,
    /// For file downloads: no limit on the whole transfer, only on connecting and on each read.
    files: reqwest::Client,
    /// The same two, resolving names through [`PublicOnly`].
    public: (PerThread, reqwest::Client),
    /// Whether this handle connects to public addresses only (a destination without
    /// `allow_private_addresses`).
    public_only: bool,
    /// Where every upstream call is counted and timed.
    metrics: std::sync::Arc<crate::observe::metrics::Metrics>,
}

/// A client for each thread that calls through it, all made alike. reqwest drives each pooled
/// connection on the runtime that opened it, and every actix worker runs a runtime of its own: with
/// one client shared by all, a kick-off on one worker often went out over a connection the other
/// worker drives, and the call then woke that thread twice (the request handed over, the answer
/// handed back), and waited whenever it was busy. Here each thread's calls go over connections its
/// own runtime drives.
#[derive(Clone)]
struct PerThread {
    /// This set's identity in each thread's list; the list forgets a set no handle holds any more.
    key: std::sync::Arc<()>,
    make: std::sync::Arc<dyn Fn() -> Result<reqwest::Client, reqwest::Error> + Send + Sync>,
    /// The first one made, shared: for callers on any thread, and should a later one fail to build.
    shared: reqwest::Client,
}

thread_local! {
    static PER_THREAD: std::cell::RefCell<Vec<(std::sync::Weak<()>, reqwest::Client)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl std::fmt::Debug for PerThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerThread").finish_non_exhaustive()
    }
}

impl PerThread {
    fn new(
        make: impl Fn() -> Result<reqwest::Client, reqwest::Error> + Send + Sync + 'static,
    ) -> Result<Self, reqwest::Error> {
        Ok(PerThread {
            key: std::sync::Arc::new(()),
            shared: make()?,
            make: std::sync::Arc::new(make),
        })
    }

    /// The calling thread's client, made on its first call.
    fn get(&self) -> reqwest::Client {
        PER_THREAD.with_borrow_mut(|clients| {
            let mine = std::sync::Arc::as_ptr(&self.key);
            if let Some((_, client)) = clients.iter().find(|(key, _)| key.as_ptr() == mine) {
                return client.clone();
            }
            // Only when a thread meets a new set: forget the sets no handle holds any more.
            clients.retain(|(key, _)| key.strong_count() > 0);
            let client = (self.make)().unwrap_or_else(|_| self.shared.clone());
            clients.push((std::sync::Arc::downgrade(&self.key), client.clone()));
            client
        })
    }
}

/// A resolver that answers only public addresses, so the address checked is the address connected
/// to (DNS cannot answer one address to a check and another to the connection).
#[derive(Debug)]
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !super::files::is_non_public(a.ip()))
                .collect();
            if found.is_empty() {
                tracing::warn!(message = "Upstream name refused: it resolves to no public address.", host = %host);
                return Err("the name resolves to no public address".into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An upstream's answer, read whole.
#[derive(Debug)]
pub struct UpstreamAnswer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why no answer came back.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the upstream did not answer in time")]
    Timeout,
    #[error("the upstream could not be reached")]
    Unreachable,
    #[error("the upstream's answer was larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("the request could not be built: {0}")]
    Build(String),
    /// A literal address that is loopback, private or otherwise not public, for a destination that
    /// does not allow them.
    #[error(
        "the upstream's address is not public and the destination does not allow private addresses"
    )]
    NotPublic,
}

/// The one outbound policy every client the gateway builds follows (EHR calls, file downloads, the
/// token endpoints, source JWKS and notifications): a connect timeout, a timeout on the whole call or on
/// each read, no automatic redirects (a redirect is followed by hand, checked hop by hop, so
/// Authorization never leaves the upstream's origin), and the gateway's User-Agent. A client that cannot
/// be built is an error, never a silently different client.
fn policy(connect: Duration, idle: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .pool_idle_timeout(idle)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("fhirgate/", env!("CARGO_PKG_VERSION")))
}

impl UpstreamClient {
    /// The clients, counting and timing every call in `metrics` (owned by startup, one per gateway).
    pub fn new(
        settings: &UpstreamSettings,
        metrics: std::sync::Arc<crate::observe::metrics::Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let connect = Duration::from_secs_f64(settings.connect_timeout_secs);
        let call = Duration::from_secs_f64(settings.request_timeout_secs);
        let idle = Duration::from_secs_f64(settings.pool_idle_secs);
        let resolver = std::sync::Arc::new(PublicOnly);
        let public = resolver.clone();
        Ok(UpstreamClient {
            client: PerThread::new(move || policy(connect, idle).timeout(call).build())?,
            // A download may take long; each read may not.
            files: policy(connect, idle).read_timeout(call).build()?,
            public: (
                PerThread::new(move || {
                    policy(connect, idle)
                        .timeout(call)
                        .dns_resolver(public.clone())
                        .build()
                })?,
                policy(connect, idle)
                    .read_timeout(call)
                    .dns_resolver(resolver)
                    .build()?,
            ),
            public_only: false,
            metrics,
        })
    }

    /// This client for one destination: unless `allow_private_addresses`, every hop to its EHR and
    /// file hosts goes to public addresses only (names resolved through [`PublicOnly`], literal
    /// addresses checked before the call).
    pub fn for_destination(&self, allow_private_addresses: bool) -> UpstreamClient {
        let mut out = self.clone();
        if !allow_private_addresses {
            out.client = self.public.0.clone();
            out.files = self.public.1.clone();
            out.public_only = true;
        }
        out
    }

    /// Refuses a URL whose host is a literal non-public address, for a public-only client (names are
    /// the resolver's to check).
    pub fn check_literal(&self, url: &url::Url) -> Result<(), TransportError> {
        if !self.public_only {
            return Ok(());
        }
        match url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            Ok(ip) if super::files::is_non_public(ip) => Err(TransportError::NotPublic),
            _ => Ok(()),
        }
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &std::sync::Arc<crate::observe::metrics::Metrics> {
        &self.metrics
    }

    /// The client for small requests (token endpoints, discovery).
    pub fn plain(&self) -> &reqwest::Client {
        &self.client.shared
    }

    /// The client for streaming file downloads.
    pub fn files(&self) -> &reqwest::Client {
        &self.files
    }

    /// Sends `req`, adding `Authorization: Bearer` when a token is given; `resend` says whether it may
    /// go out again when its connection closes unanswered ([`execute`]).
    pub async fn send(
        &self,
        req: &UpstreamRequest,
        token: Option<&Secret>,
        resend: Resend,
    ) -> Result<UpstreamAnswer, TransportError> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|e| TransportError::Build(e.to_string()))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &req.headers {
            let value =
                HeaderValue::from_str(value).map_err(|e| TransportError::Build(e.to_string()))?;
            headers.insert(HeaderName::from_static(static_lower(name)), value);
        }
        if let Some(token) = token {
            let mut v =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    TransportError::Build("the token is not a valid header value".into())
                })?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        // Parsed once here: handed a string, reqwest would parse it again.
        // (reqwest refused one it could not parse as a transport failure: so does this.)
        let url = url::Url::parse(&req.url).map_err(|_| TransportError::Unreachable)?;
        self.check_literal(&url)?;
        let client = self.client.get();
        let mut builder = client.request(method, url).headers(headers);
        if let Some(body) = &req.body {
            builder = builder.body(body.to_string());
        }
        let request = builder.build().map_err(classify)?;
        let response = execute(&client, request, resend).await.map_err(classify)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(classify)?;
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(TransportError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(UpstreamAnswer {
            status,
            headers,
            body: Bytes::from(body),
        })
    }
}

/// Header names in requests are a fixed, small set; `from_static` needs them lowercase.
fn static_lower(name: &'static str) -> &'static str {
    match name {
        "Accept" => "accept",
        "Prefer" => "prefer",
        "X-Request-ID" => "x-request-id",
        "Content-Type" => "content-type",
        other => other,
    }
}

/// How many times an idempotent request (or a token request, made anew each time) goes out when each
/// connection it goes out on closes before answering.
const ATTEMPTS: usize = 3;

/// Whether a request may go out again when the connection it went out on closed before any answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// A kick-off, whatever its method: the EHR may have started an export before the connection
    /// closed, and a second request could start another.
    Never,
    /// A status call, a delete, a file: asking again changes nothing on the EHR (when the method is
    /// idempotent, as GET and DELETE are).
    WhenClosedUnanswered,
}

/// Sends `request`. Unless `resend` is [`Resend::Never`], an idempotent request (GET, DELETE) goes out
/// again, on another connection, when the connection it went out on closed before any answer came: a
/// server closes a kept-alive connection after its own idle time (5 s in Node and actix, the SMART
/// reference server among them), and a request that leaves just as it does meets a closed connection.
/// RFC 9110 §9.2.2 lets a client retry an idempotent request then.
pub(crate) async fn execute(
    client: &reqwest::Client,
    request: reqwest::Request,
    resend: Resend,
) -> Result<reqwest::Response, reqwest::Error> {
    if resend == Resend::Never || !request.method().is_idempotent() {
        return client.execute(request).await;
    }
    match execute_anew(client, || request.try_clone().ok_or(Unrepeatable)).await {
        Ok(answer) => answer,
        // A streamed body cannot be copied: the request goes once, as it is.
        Err(Unrepeatable) => client.execute(request).await,
    }
}

/// A request whose body cannot be copied to send again.
struct Unrepeatable;

/// Sends the request `make` makes; when the connection it went out on closed before any answer came,
/// `make` makes it anew and it goes on another connection, [`ATTEMPTS`] times at most. For a request
/// that may go again only as a new one (a token request: each carries a client assertion with a jti
/// of its own), and for [`execute`]'s copies. `make`'s error ends it.
pub(crate) async fn execute_anew<E>(
    client: &reqwest::Client,
    mut make: impl FnMut() -> Result<reqwest::Request, E>,
) -> Result<Result<reqwest::Response, reqwest::Error>, E> {
    let mut attempt = 1;
    loop {
        let request = make()?;
        let method = request.method().clone();
        match client.execute(request).await {
            Err(e) if attempt < ATTEMPTS && closed_before_answer(&e) => {
                tracing::debug!(
                    message = "The upstream closed the connection before answering; sending the request again on another.",
                    method = %method
                );
                attempt += 1;
            }
            answer => return Ok(answer),
        }
    }
}

/// Whether `e` says the connection closed (or was reset) after the request went out and before any
/// of the answer came: not a timeout, not a refused connection, not an answer cut short.
fn closed_before_answer(e: &reqwest::Error) -> bool {
    if e.is_timeout() || e.is_connect() || e.is_body() || e.is_decode() || e.is_builder() {
        return false;
    }
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        source = err.source();
    }
    false
}

pub(crate) fn classify(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        TransportError::Unreachable
    }
}

/// Reads `Retry-After` as seconds from `now`: delta-seconds, an HTTP-date, or (quirks seen in real
/// servers, the SMART reference server among them) an absolute epoch time in seconds or milliseconds.
/// A time in the past means now; the result is capped at `cap` (`[jobs] max_retry_after_secs`).
pub fn retry_after_secs(headers: &HeaderMap, now: DateTime<Utc>, cap: u64) -> Option<u64> {
    let raw = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let secs = if let Ok(n) = raw.parse::<u64>() {
        // Past a year of seconds a number is a point in time, not a delay; past what epoch seconds
        // reach for millennia, it is epoch milliseconds.
        let epoch_secs = if n > 100_000_000_000 {
            Some(n / 1000)
        } else if n > 365 * 24 * 3600 {
            Some(n)
        } else {
            None
        };
        match epoch_secs {
            Some(at) => (i64::try_from(at).unwrap_or(i64::MAX) - now.timestamp()).max(0) as u64,
            None => n,
        }
    } else {
        let at = DateTime::parse_from_rfc2822(raw).ok()?;
        (at.timestamp() - now.timestamp()).max(0) as u64
    };
    Some(secs.min(cap))
}

/// Test servers shared by the outbound clients' tests.
#[cfg(test)]
pub(crate) mod testing {
    /// An EHR on loopback that answers the first request on its first connection, keeps that
    /// connection open, and closes it without answering when the next request arrives on it (what a
    /// server does when its idle timeout ends just as a request goes out); every later connection is
    /// answered. Returns its address and a count of the connections it took.
    pub(crate) async fn closes_its_kept_alive_connection_on_the_second_request() -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        ehr(true, OK).await
    }

    /// As [`closes_its_kept_alive_connection_on_the_second_request`], answering `answer` (a whole
    /// HTTP/1.1 response) to every request it answers.
    pub(crate) async fn closes_its_kept_alive_connection_on_the_second_request_answering(
        answer: &'static [u8],
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        ehr(true, answer).await
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    /// An EHR on loopback that answers every request and keeps its connections open, with a count of
    /// the connections it took.
    pub(crate) async fn keeps_its_connections_open() -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        ehr(false, OK).await
    }

    async fn ehr(
        close_the_second_request: bool,
        answer: &'static [u8],
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    for request in 0.. {
                        // Reads one head (the test's requests carry no body it needs; a body's bytes
                        // are read with the next head).
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut byte).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => head.extend_from_slice(&byte[..k]),
                            }
                        }
                        if close_the_second_request && n == 0 && request == 1 {
                            return; // closed, no answer
                        }
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, connections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_str(v).unwrap(),
        );
        h
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_epoch_times_in_seconds_and_milliseconds() {
        let now = DateTime::parse_from_rfc3339("2025-07-22T23:59:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let read = |v: &str| retry_after_secs(&headers(v), now, 3600);
        assert_eq!(read("600"), Some(600));
        assert_eq!(read("0"), Some(0));
        assert_eq!(read("Tue, 22 Jul 2025 23:59:59 GMT"), Some(59));
        assert_eq!(read(&(now.timestamp() + 120).to_string()), Some(120));
        assert_eq!(
            read(&((now.timestamp() + 300) * 1000 + 355).to_string()),
            Some(300)
        );
        assert_eq!(read("31000000"), Some(3600), "a long delay is capped");
        assert_eq!(
            read("40000000"),
            Some(0),
            "an epoch time in the past is now"
        );
        assert_eq!(read("soon"), None);
        assert_eq!(read("Mon, 01 Jan 2024 00:00:00 GMT"), Some(0));
        assert_eq!(read(&((now.timestamp() - 50) * 1000).to_string()), Some(0));
    }

    #[test]
    fn each_thread_calls_through_a_client_of_its_own_made_once_and_forgotten_with_its_set() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let made = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = made.clone();
        let set = PerThread::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            reqwest::Client::builder().build()
        })
        .unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 1, "the shared one");
        let _ = set.get();
        let _ = set.get();
        let _ = set.clone().get();
        assert_eq!(made.load(Ordering::SeqCst), 2, "one for this thread");
        let other = set.clone();
        std::thread::spawn(move || {
            let _ = other.get();
            let _ = other.get();
        })
        .join()
        .unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 3, "one for the other thread");

        drop(set);
        let next = PerThread::new(|| reqwest::Client::builder().build()).unwrap();
        let _ = next.get();
        assert_eq!(
            PER_THREAD.with_borrow(Vec::len),
            1,
            "the dropped set's client is gone from this thread's list"
        );
    }

    fn client() -> UpstreamClient {
        UpstreamClient::new(
            &UpstreamSettings::default(),
            std::sync::Arc::new(crate::observe::metrics::Metrics::new()),
        )
        .unwrap()
    }

    fn request(method: &'static str, addr: std::net::SocketAddr) -> UpstreamRequest {
        UpstreamRequest {
            method,
            url: format!("http://{addr}/fhir/export-status/1"),
            headers: vec![("Accept", "application/json".into())],
            body: None,
        }
    }

    #[tokio::test]
    async fn a_status_call_or_delete_whose_kept_alive_connection_closes_unanswered_goes_again_on_a_new_one()
     {
        for method in ["GET", "DELETE"] {
            let (addr, connections) =
                testing::closes_its_kept_alive_connection_on_the_second_request().await;
            let client = client();
            let again = Resend::WhenClosedUnanswered;
            let first = client.send(&request(method, addr), None, again).await;
            assert_eq!(first.unwrap().status, 200);
            let second = client.send(&request(method, addr), None, again).await;
            assert_eq!(
                second.map(|a| a.status).ok(),
                Some(200),
                "{method} is answered on a new connection"
            );
            assert_eq!(
                connections.load(std::sync::atomic::Ordering::SeqCst),
                2,
                "{method}: the first connection was reused, then a second opened"
            );
        }
    }

    #[tokio::test]
    async fn an_idle_connection_to_an_ehr_is_reused_only_within_pool_idle_secs() {
        // (pool_idle_secs, connections the EHR sees for two calls 0.3 s apart)
        for (idle, connections_seen) in [(4.0, 1), (0.1, 2)] {
            let (addr, connections) = testing::keeps_its_connections_open().await;
            let settings = UpstreamSettings {
                pool_idle_secs: idle,
                ..UpstreamSettings::default()
            };
            let metrics = std::sync::Arc::new(crate::observe::metrics::Metrics::new());
            let client = UpstreamClient::new(&settings, metrics).unwrap();
            let get = request("GET", addr);
            let first = client.send(&get, None, Resend::Never).await;
            assert_eq!(first.unwrap().status, 200);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let second = client.send(&get, None, Resend::Never).await;
            assert_eq!(second.unwrap().status, 200);
            assert_eq!(
                connections.load(std::sync::atomic::Ordering::SeqCst),
                connections_seen,
                "pool_idle_secs = {idle}"
            );
        }
    }

    #[tokio::test]
    async fn a_kick_off_whose_kept_alive_connection_closes_unanswered_is_not_sent_twice() {
        let cases = [
            ("GET", Resend::Never, "a GET kick-off"),
            ("POST", Resend::Never, "a POST kick-off"),
            ("POST", Resend::WhenClosedUnanswered, "a POST of any kind"),
        ];
        for (method, resend, what) in cases {
            let (addr, connections) =
                testing::closes_its_kept_alive_connection_on_the_second_request().await;
            let client = client();
            let first = client.send(&request(method, addr), None, resend).await;
            assert_eq!(first.unwrap().status, 200);
            let second = client.send(&request(method, addr), None, resend).await;
            assert!(
                matches!(second, Err(TransportError::Unreachable)),
                "{what}: {second:?}"
            );
            assert_eq!(
                connections.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "{what}: no second connection, the EHR may have taken it"
            );
        }
    }

    #[test]
    fn every_wait_is_capped_and_oracle_healths_600_is_honoured() {
        let now = Utc::now();
        assert_eq!(retry_after_secs(&headers("86400"), now, 3600), Some(3600));
        // The SMART reference server's epoch milliseconds, 300 s ahead: 300 s, not a day.
        let ahead = ((now.timestamp() + 300) * 1000).to_string();
        let wait = retry_after_secs(&headers(&ahead), now, 3600).unwrap();
        assert!((299..=300).contains(&wait), "{wait}");
        assert_eq!(retry_after_secs(&headers("600"), now, 3600), Some(600));
        assert_eq!(retry_after_secs(&headers("600"), now, 60), Some(60));
    }
}
