//! The front door, below HTTP: every partner connection passes through [`Guarded`], which
//!
//! - closes a connection whose request head (request line and headers) is not complete within
//!   `[server] header_timeout_secs` of its first byte, on the first request or any later one on a
//!   kept-alive connection (actix-http times out only the first);
//! - answers 431 and closes when a head grows past [`MAX_HEAD_BYTES`], before the HTTP parser sees it
//!   (a header name of 64 KiB or more panics inside actix-http);
//! - counts connections against `[server] max_connections`. Past it, the connection that has been
//!   stalled longest (idle between requests, or with a head still arriving) is closed to make room, so
//!   a flood of slow connections cannot lock out `/healthz` or real partners; when every connection is
//!   busy with a request, the new one gets a 503 at once and is closed, never left in the accept queue.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Largest request head accepted (nginx's default allows 4 × 8 KiB for large headers).
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Sockets kept back from `max_connections`' default for the store, the EHRs and files.
const RESERVED_FDS: usize = 256;

/// The default `[server] max_connections`: the process's open-file limit less what the gateway needs
/// for its own sockets and files.
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        })
        .unwrap_or(4096);
    soft.saturating_sub(RESERVED_FDS).max(32)
}

/// A complete answer, `connection: close`, with an OperationOutcome body.
fn canned(status: &str, code: &str, diagnostics: &str, extra: &str) -> Vec<u8> {
    let body = serde_json::json!({"resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]})
    .to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/fhir+json\r\n{extra}connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

static TOO_MANY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    canned(
        "503 Service Unavailable",
        "transient",
        "The gateway has too many connections open; try again shortly.",
        "retry-after: 1\r\n",
    )
});

static HEAD_TOO_LARGE: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    canned(
        "431 Request Header Fields Too Large",
        "too-long",
        "The request line and headers exceed 32 KiB.",
        "",
    )
});

/// Milliseconds on the front door's clock.
fn now_ms(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
}

/// Not stalled: serving a request.
const BUSY: u64 = u64::MAX;

/// What the front door knows of one open connection, shared with its [`Guarded`].
#[derive(Debug, Default)]
struct ConnState {
    /// Since when (ms) it is stalled: its head began arriving, or its last byte out went, while idle
    /// between requests; [`BUSY`] while a request is being served.
    stalled_since: AtomicU64,
    /// Chosen to make room: its next read fails.
    evict: AtomicBool,
    /// The task serving it, to wake when it is chosen.
    waker: Mutex<Option<Waker>>,
}

#[derive(Debug)]
struct Shared {
    epoch: Instant,
    open: AtomicUsize,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Shared {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Chooses the connection stalled longest and wakes it to close; false when none is stalled.
    fn evict_one(&self) -> bool {
        let conns = self.conns();
        let oldest = conns
            .values()
            .filter(|c| !c.evict.load(Ordering::Acquire))
            .map(|c| (c.stalled_since.load(Ordering::Acquire), c))
            .filter(|(since, _)| *since != BUSY)
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, conn)) => {
                conn.evict.store(true, Ordering::Release);
                let waker = conn
                    .waker
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(waker) = waker {
                    waker.wake();
                }
                true
            }
            None => false,
        }
    }
}

/// The connection count and the limits, shared by every worker.
#[derive(Debug, Clone)]
pub struct FrontDoor {
    shared: Arc<Shared>,
    max_connections: usize,
    head_timeout: Duration,
}

impl FrontDoor {
    pub fn new(max_connections: usize, head_timeout: Duration) -> Self {
        FrontDoor {
            shared: Arc::new(Shared {
                epoch: Instant::now(),
                open: AtomicUsize::new(0),
                next_id: AtomicU64::new(0),
                conns: Mutex::new(HashMap::new()),
            }),
            max_connections: max_connections.max(1),
            head_timeout,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Takes a new connection in: past the cap, in place of the connection stalled longest, or (when
    /// every connection is busy) not at all: it gets a 503 and is closed.
    pub fn admit(&self, io: TcpStream) -> Option<Guarded> {
        let before = self.shared.open.fetch_add(1, Ordering::AcqRel);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::default());
        state
            .stalled_since
            .store(now_ms(self.shared.epoch), Ordering::Release);
        let slot = Slot {
            shared: self.shared.clone(),
            id,
            state,
        };
        if before >= self.max_connections && !self.shared.evict_one() {
            // Best effort, written straight to the socket (a stream just accepted has no write
            // readiness yet): the answer fits in an empty socket buffer; then the socket is closed.
            if let Ok(mut socket) = io.into_std() {
                let _ = std::io::Write::write(&mut socket, &TOO_MANY);
            }
            tracing::warn!(
                message = "Connection refused: max_connections reached, none stalled.",
                open = before
            );
            return None;
        }
        self.shared.conns().insert(id, slot.state.clone());
        let _ = io.set_nodelay(true);
        Some(Guarded {
            io,
            head: Head::Idle,
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            timeout: self.head_timeout,
            slot,
        })
    }
}

/// One place among the open connections, given back when the connection goes.
#[derive(Debug)]
struct Slot {
    shared: Arc<Shared>,
    id: u64,
    state: Arc<ConnState>,
}

impl Slot {
    /// Stalled from now on (a head begins, or an answer goes out between requests).
    fn stalled(&self) {
        self.state
            .stalled_since
            .store(now_ms(self.shared.epoch), Ordering::Release);
    }

    /// Serving a request.
    fn busy(&self) {
        self.state.stalled_since.store(BUSY, Ordering::Release);
    }

    /// Whether it was chosen to make room; keeps `waker` to wake it if it is chosen later.
    fn evicted(&self, waker: &Waker) -> bool {
        let mut kept = self
            .state
            .waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !kept.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *kept = Some(waker.clone());
        }
        self.state.evict.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.conns().remove(&self.id);
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where the connection is in its current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Between requests (kept alive): the next byte starts a head.
    Idle,
    /// Reading a head: bytes so far, and whether the last byte ended a line.
    Reading { bytes: usize, line_ended: bool },
    /// The head is complete; the rest of the request (its body) is actix's to time.
    Done,
}

/// Reads `bytes` of a head up to and including its next line feed (or all of them): the head as it
/// then stands and how many bytes that took. The head ends at a line feed whose line held nothing but
/// carriage returns (CRLF CRLF, or bare LFs as httparse allows); `Err` when it grew past
/// [`MAX_HEAD_BYTES`].
fn follow_line(seen: usize, line_ended: bool, bytes: &[u8]) -> Result<(Head, usize), ()> {
    let newline = memchr::memchr(b'\n', bytes);
    let line = &bytes[..newline.unwrap_or(bytes.len())];
    let empty_so_far = line_ended && line.iter().all(|&b| b == b'\r');
    let taken = line.len() + usize::from(newline.is_some());
    let seen = seen + taken;
    if seen > MAX_HEAD_BYTES {
        return Err(());
    }
    let head = match newline {
        Some(_) if empty_so_far => Head::Done,
        Some(_) => Head::Reading {
            bytes: seen,
            line_ended: true,
        },
        None => Head::Reading {
            bytes: seen,
            line_ended: empty_so_far,
        },
    };
    Ok((head, taken))
}

/// A partner connection under the front door's rules.
#[derive(Debug)]
pub struct Guarded {
    io: TcpStream,
    head: Head,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    slot: Slot,
}

impl Guarded {
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.io.peer_addr().ok()
    }

    /// Follows `bytes` through the head, a line at a time; `Err` when the head grew too large.
    fn track(&mut self, mut bytes: &[u8]) -> Result<(), ()> {
        while !bytes.is_empty() {
            match self.head {
                Head::Idle => {
                    self.head = Head::Reading {
                        bytes: 0,
                        line_ended: false,
                    };
                    self.slot.stalled();
                    self.deadline.as_mut().reset(Instant::now() + self.timeout);
                }
                Head::Reading {
                    bytes: seen,
                    line_ended,
                } => {
                    let (head, taken) = follow_line(seen, line_ended, bytes)?;
                    self.head = head;
                    bytes = &bytes[taken..];
                }
                // Body bytes (and anything pipelined behind them) are not followed.
                Head::Done => break,
            }
        }
        Ok(())
    }

    /// The server wrote `data`: an answer means the request was read, so the next byte in starts a
    /// new head; an interim answer (`100 Continue`) does not, the body is still to come. While idle
    /// between requests, every byte out (a long download) keeps the connection from looking stalled.
    fn wrote(&mut self, data: &[u8]) {
        if data.starts_with(b"HTTP/1.1 1") || data.starts_with(b"HTTP/1.0 1") {
            return;
        }
        if matches!(self.head, Head::Done | Head::Idle) {
            self.head = Head::Idle;
            self.slot.stalled();
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.slot.evicted(cx.waker()) {
            tracing::info!(
                message = "Connection closed to make room: max_connections reached and it was stalled longest."
            );
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            )));
        }
        if matches!(this.head, Head::Reading { .. }) && this.deadline.as_mut().poll(cx).is_ready() {
            tracing::info!(message = "Connection closed: its request head did not arrive in time.");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not complete within header_timeout_secs",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let was_done = this.head == Head::Done;
                if this.track(&buf.filled()[before..]).is_err() {
                    // The parser never sees this head: the answer is ours, then the connection ends.
                    buf.set_filled(before);
                    let _ = this.io.try_write(&HEAD_TOO_LARGE);
                    tracing::info!(message = "Request head too large: 431, connection closed.");
                    return Poll::Ready(Ok(()));
                }
                if matches!(this.head, Head::Reading { .. }) {
                    // Registers the timer with this task, so a head that stops arriving is noticed.
                    let _ = this.deadline.as_mut().poll(cx);
                }
                if !was_done && this.head == Head::Done {
                    // A whole head arrived: the request is being served, not stalled.
                    this.slot.busy();
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.wrote(data);
        Pin::new(&mut this.io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.wrote(
            bufs.iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]),
        );
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::{Head, MAX_HEAD_BYTES, follow_line};

    /// Where a head ends, byte by byte: the rule `follow_line` applies a line at a time.
    fn end_of_head_byte_by_byte(bytes: &[u8]) -> Option<usize> {
        let mut line_ended = false;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'\n' if line_ended => return Some(i + 1),
                b'\n' => line_ended = true,
                b'\r' => {}
                _ => line_ended = false,
            }
        }
        None
    }

    /// Feeds `chunks` to `follow_line` as reads would arrive: where the head ended, or the error.
    fn end_of_head_in_reads(chunks: &[&[u8]]) -> Result<Option<usize>, ()> {
        let (mut seen, mut line_ended, mut total) = (0, false, 0);
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let (head, taken) = follow_line(seen, line_ended, rest)?;
                total += taken;
                match head {
                    Head::Done => return Ok(Some(total)),
                    Head::Reading {
                        bytes,
                        line_ended: l,
                    } => (seen, line_ended) = (bytes, l),
                    Head::Idle => unreachable!(),
                }
                rest = &rest[taken..];
            }
        }
        Ok(None)
    }

    #[test]
    fn a_head_ends_after_its_empty_line_however_the_reads_split_it() {
        let heads: [&[u8]; 7] = [
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nbody",
            b"GET /a HTTP/1.1\nHost: x\n\nbody",
            b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /a HTTP/1.1\r\nA: \r\r\n\r\r\n",
            b"GET /a HTTP/1.1\r\nHost: x\r\n",
            b"GET /a HTTP/1.1\r\nX: \rx\r\n\r\n",
            b"GET /a HTTP/1.1\r\nx\r\n\r\n",
        ];
        for head in heads {
            let expected = end_of_head_byte_by_byte(head);
            assert_eq!(end_of_head_in_reads(&[head]), Ok(expected), "{head:?}");
            for split in 0..=head.len() {
                let (a, b) = head.split_at(split);
                assert_eq!(
                    end_of_head_in_reads(&[a, b]),
                    Ok(expected),
                    "{head:?} at {split}"
                );
            }
            let bytes: Vec<&[u8]> = head.chunks(1).collect();
            assert_eq!(
                end_of_head_in_reads(&bytes),
                Ok(expected),
                "{head:?} byte by byte"
            );
        }
    }

    #[test]
    fn a_head_of_the_largest_size_passes_and_one_byte_more_is_refused() {
        let head = |size: usize| {
            let mut h = b"GET / HTTP/1.1\r\nX: ".to_vec();
            h.resize(size - 4, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        let largest = head(MAX_HEAD_BYTES);
        assert_eq!(end_of_head_in_reads(&[&largest]), Ok(Some(MAX_HEAD_BYTES)));
        assert_eq!(end_of_head_in_reads(&[&head(MAX_HEAD_BYTES + 1)]), Err(()));
        // Still incomplete past the limit: refused before its end arrives.
        assert_eq!(
            end_of_head_in_reads(&[&largest[..MAX_HEAD_BYTES - 4], b"aaaaaaaa"]),
            Err(())
        );
    }

    #[test]
    fn the_canned_answers_say_their_own_length() {
        for answer in [&*super::TOO_MANY, &*super::HEAD_TOO_LARGE] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            serde_json::from_str::<serde_json::Value>(body).unwrap();
        }
    }
}
