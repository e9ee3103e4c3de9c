//! A client connection's socket, watched: when it last moved, whether a
//! request head is being read and since when, how many requests are in
//! flight (the watchdog in `serve` decides from these which timeout
//! applies), and for Socket.io's WebSocket a guard on message sizes.
//!
//! Why the size guard lives here: engineioxide (0.17.3, the newest that
//! builds with this project's Rust 1.90) applies `max_payload` to
//! long-polling only and opens its WebSocket with tungstenite's defaults
//! (64 MiB messages), with no way to configure it. So the socket reads the
//! client's frame headers itself once a Socket.io upgrade is armed, and
//! fails the read that announces a message over the limit, before its
//! payload is buffered anywhere.

use std::io;
use std::pin::Pin;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::Admission;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the process's first connection; 0 is never used as
/// a time (it means "not set").
fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64 + 1
}

/// Turns a stored time back into an `Instant`.
pub(crate) fn instant(ms: u64) -> Instant {
    *EPOCH + Duration::from_millis(ms.saturating_sub(1))
}

/// What the watchdog and the per-connection service share about one
/// connection. Atomics: written by the socket and the service, read by the
/// watchdog, all in one task, so `Relaxed` is enough.
#[derive(Debug)]
pub struct ConnState {
    /// When the connection was accepted.
    pub opened: u64,
    /// The last byte read or written.
    last_activity: AtomicU64,
    /// When the first byte of the request head being read arrived; 0 when
    /// no head is being read.
    head_started: AtomicU64,
    /// Requests handed to the router and not yet answered.
    in_flight: AtomicU32,
    /// Bytes read so far.
    bytes_read: AtomicU64,
    /// Stream offset just past the blank line of the latest request head.
    head_end: AtomicU64,
    /// Largest client WebSocket message once armed; 0: not armed.
    ws_limit: AtomicU64,
    /// Wakes the watchdog when the phase changes (a head starts, a
    /// request starts or ends), so it never sleeps on a stale deadline.
    pub changed: Notify,
}

/// Which timeout a connection is under now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing read yet.
    Silent,
    /// A request head is arriving (since the given time).
    ReadingHead(u64),
    /// A request is being answered: only the request timeout applies.
    Busy,
    /// Between requests (idle since the given time).
    Idle(u64),
}

impl ConnState {
    pub fn new() -> Self {
        let now = now_ms();
        Self {
            opened: now,
            last_activity: AtomicU64::new(now),
            head_started: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            bytes_read: AtomicU64::new(0),
            head_end: AtomicU64::new(u64::MAX),
            ws_limit: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    pub fn phase(&self) -> Phase {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Phase::Busy;
        }
        match self.head_started.load(Ordering::Relaxed) {
            0 if self.bytes_read.load(Ordering::Relaxed) == 0 => Phase::Silent,
            0 => Phase::Idle(self.last_activity.load(Ordering::Relaxed)),
            started => Phase::ReadingHead(started),
        }
    }

    /// A request reached the router: its head is complete.
    pub fn begin_request(self: &std::sync::Arc<Self>) -> InFlight {
        self.head_started.store(0, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// Arms the WebSocket message guard for an upgrade on this request.
    /// Refused (false) when bytes beyond the request head were already
    /// read: they were not checked, so the guard could not find the frame
    /// boundaries (a client never sends frames before the 101).
    pub fn arm_ws_guard(&self, limit: u64) -> bool {
        if self.bytes_read.load(Ordering::Relaxed) != self.head_end.load(Ordering::Relaxed) {
            return false;
        }
        self.ws_limit.store(limit, Ordering::Relaxed);
        true
    }

    pub fn disarm_ws_guard(&self) {
        self.ws_limit.store(0, Ordering::Relaxed);
    }
}

impl Default for ConnState {
    fn default() -> Self {
        Self::new()
    }
}

/// A request in flight; its end starts the keep-alive wait.
pub struct InFlight(std::sync::Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_activity.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

/// The accepted socket, with its place in the connection caps (given back
/// when the socket is dropped, after an upgrade too).
pub struct Tracked {
    inner: TcpStream,
    state: std::sync::Arc<ConnState>,
    head: HeadScan,
    frames: FrameGuard,
    _admission: Admission,
}

impl Tracked {
    pub fn new(inner: TcpStream, state: std::sync::Arc<ConnState>, admission: Admission) -> Self {
        Self {
            inner,
            state,
            head: HeadScan::default(),
            frames: FrameGuard::default(),
            _admission: admission,
        }
    }

    /// Bookkeeping for bytes just read; an error fails the read.
    fn saw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let state = &self.state;
        let now = now_ms();
        state.last_activity.store(now, Ordering::Relaxed);
        let offset = state
            .bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if state.in_flight.load(Ordering::Relaxed) == 0
            && state.head_started.load(Ordering::Relaxed) == 0
        {
            state.head_started.store(now, Ordering::Relaxed);
            state.changed.notify_one();
            self.head.start();
        }
        if let Some(end) = self.head.feed(bytes, offset) {
            state.head_end.store(end, Ordering::Relaxed);
        }
        let limit = state.ws_limit.load(Ordering::Relaxed);
        if limit > 0 && !self.frames.feed(bytes, limit) {
            metrics::counter!("tally_live_oversize_messages_total", "transport" => "socketio")
                .increment(1);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a WebSocket message over {limit} bytes"),
            ));
        }
        Ok(())
    }

    fn wrote(&self) {
        self.state.last_activity.store(now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.saw(new)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.wrote();
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.wrote();
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Finds the blank line that ends a request head (`\r\n\r\n`).
#[derive(Debug, Default)]
struct HeadScan {
    active: bool,
    matched: u8,
}

impl HeadScan {
    fn start(&mut self) {
        self.active = true;
        self.matched = 0;
    }

    /// The stream offset just past the blank line, once found in `bytes`
    /// (which start at `offset`).
    fn feed(&mut self, bytes: &[u8], offset: u64) -> Option<u64> {
        if !self.active {
            return None;
        }
        for (i, &b) in bytes.iter().enumerate() {
            let want = if self.matched.is_multiple_of(2) {
                b'\r'
            } else {
                b'\n'
            };
            self.matched = if b == want {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.matched == 4 {
                self.active = false;
                return Some(offset + i as u64 + 1);
            }
        }
        None
    }
}

/// Reads client WebSocket frame headers (RFC 6455 §5.2) and adds up each
/// message's payload length across its fragments.
#[derive(Debug, Default)]
struct FrameGuard {
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    remaining: u64,
    /// Payload length of the current data message so far.
    message: u64,
}

impl FrameGuard {
    /// False when a message goes over `limit`.
    fn feed(&mut self, mut bytes: &[u8], limit: u64) -> bool {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(bytes.len() as u64);
                self.remaining -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have < 2 {
                continue;
            }
            let len7 = self.header[1] & 0x7f;
            let masked = self.header[1] & 0x80 != 0;
            let need =
                2 + match len7 {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                } + if masked { 4 } else { 0 };
            if self.have < need {
                continue;
            }
            let len = match len7 {
                126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.header[2..10]);
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let opcode = self.header[0] & 0x0f;
            match opcode {
                0 => self.message = self.message.saturating_add(len),
                1 | 2 => self.message = len,
                // Control frames: at most 125 bytes, not part of a message.
                _ => {}
            }
            if opcode < 8 && self.message > limit {
                return false;
            }
            self.have = 0;
            self.remaining = len;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
        let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=65535 => {
                f.push(0x80 | 126);
                f.extend((len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend((len as u64).to_be_bytes());
            }
        }
        f.extend([1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn messages_within_the_limit_pass_byte_by_byte() {
        let mut g = FrameGuard::default();
        let bytes: Vec<u8> =
            [frame(1, true, 100), frame(9, true, 4), frame(2, true, 1000)].concat();
        for b in bytes {
            assert!(g.feed(&[b], 1000));
        }
    }

    #[test]
    fn an_oversize_frame_or_fragmented_message_fails() {
        assert!(!FrameGuard::default().feed(&frame(1, true, 70_000)[..14], 65_536));
        let mut g = FrameGuard::default();
        let mut bytes = frame(1, false, 40_000);
        bytes.extend(frame(0, true, 40_000));
        assert!(!g.feed(&bytes, 65_536));
    }

    #[test]
    fn the_head_scan_finds_the_blank_line() {
        let mut s = HeadScan::default();
        s.start();
        assert_eq!(s.feed(b"GET / HTTP/1.1\r\nHost: x\r", 10), None);
        assert_eq!(s.feed(b"\n\r\nabc", 34), Some(37));
    }
}
