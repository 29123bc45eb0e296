//! Process-wide counters: for the shutdown summary, the drain, and `/metrics`.

use super::report::SessionLog;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Default)]
pub(crate) struct Stats {
    sessions: AtomicU64,
    refused: AtomicU64,
    reclaimed: AtomicU64,
    active: AtomicUsize,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    /// By [`Refusal`].
    refused_by: [AtomicU64; Refusal::ALL.len()],
    /// By [`Outcome`].
    ended_by: [AtomicU64; Outcome::ALL.len()],
    /// SOCKS5 replies by REP (0 to 8; anything else counts as 1, general failure).
    socks5_replies: [AtomicU64; 9],
    /// SOCKS4 replies: granted (90) and rejected (91).
    socks4_replies: [AtomicU64; 2],
    /// HTTP replies burrowd sent, by [`HTTP_STATUSES`].
    http_replies: [AtomicU64; HTTP_STATUSES.len()],
    udp_up: AtomicU64,
    udp_down: AtomicU64,
    /// By [`UdpDrop`].
    udp_dropped: [AtomicU64; UdpDrop::ALL.len()],
}

/// The statuses burrowd answers HTTP proxy requests with.
pub(crate) const HTTP_STATUSES: [u16; 7] = [200, 400, 403, 407, 431, 502, 504];

/// Why a client was closed at once, without a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every worker and queue place is held (or no thread could be started).
    PoolFull,
    /// Its address holds all the sessions it may.
    AddressLimit,
    /// The access rules refuse its address.
    Rule,
    /// Out of descriptors: `accept` failed for it.
    Descriptors,
    /// It waited in the queue for `--handshake-timeout` and no worker took it.
    QueueTimeout,
    /// A connection from a `--proxy-protocol` source that did not begin with a valid
    /// PROXY header.
    ProxyHeader,
}

impl Refusal {
    pub(crate) const ALL: [Refusal; 6] = [
        Refusal::PoolFull,
        Refusal::AddressLimit,
        Refusal::Rule,
        Refusal::Descriptors,
        Refusal::QueueTimeout,
        Refusal::ProxyHeader,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::PoolFull => "pool_full",
            Refusal::AddressLimit => "per_address_limit",
            Refusal::Rule => "rule",
            Refusal::Descriptors => "descriptors",
            Refusal::QueueTimeout => "queue_timeout",
            Refusal::ProxyHeader => "proxy_header",
        }
    }
}

/// How a session ended, as `/metrics` counts it: derived from its [`End`](super::end::End).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Relayed until both sides closed; or a UDP association closed by the client, by its
    /// upstream hop, or by our shutdown.
    Closed,
    /// Refused with a failure reply (its code is counted apart).
    Replied,
    /// A login that failed.
    LoginFailed,
    /// An idle, half-close, handshake, UDP idle or `tcp://` connect timeout.
    TimedOut,
    /// Closed to make room for a newer client.
    Reclaimed,
    /// A peer's error, a protocol error, or anything else.
    Error,
}

impl Outcome {
    pub(crate) const ALL: [Outcome; 6] = [
        Outcome::Closed,
        Outcome::Replied,
        Outcome::LoginFailed,
        Outcome::TimedOut,
        Outcome::Reclaimed,
        Outcome::Error,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::Replied => "failure_reply",
            Outcome::LoginFailed => "login_failed",
            Outcome::TimedOut => "timeout",
            Outcome::Reclaimed => "reclaimed",
            Outcome::Error => "error",
        }
    }
}

/// Why a UDP datagram was dropped, as `/metrics` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpDrop {
    Foreign,
    Fragmented,
    Malformed,
    Unsendable,
    Denied,
}

impl UdpDrop {
    pub(crate) const ALL: [UdpDrop; 5] =
        [UdpDrop::Foreign, UdpDrop::Fragmented, UdpDrop::Malformed, UdpDrop::Unsendable, UdpDrop::Denied];

    pub(crate) fn label(self) -> &'static str {
        match self {
            UdpDrop::Foreign => "foreign",
            UdpDrop::Fragmented => "fragmented",
            UdpDrop::Malformed => "malformed",
            UdpDrop::Unsendable => "unsendable",
            UdpDrop::Denied => "denied",
        }
    }
}

/// The counters `/metrics` shows, read at one moment.
pub(crate) struct Counters {
    pub sessions_by_outcome: Vec<(Outcome, u64)>,
    pub refused_by: Vec<(Refusal, u64)>,
    pub reclaimed: u64,
    pub socks5_replies: Vec<(u8, u64)>,
    pub socks4_replies: Vec<(u8, u64)>,
    pub http_replies: Vec<(u16, u64)>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub udp_up: u64,
    pub udp_down: u64,
    pub udp_dropped: Vec<(UdpDrop, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Sessions served to their end.
    pub sessions: u64,
    /// Clients closed for a limit: the workers, the queue, an address's share, or a wait
    /// in the queue that ran out.
    pub refused: u64,
    /// Clients still in their handshake closed to make room for a newer one.
    pub reclaimed: u64,
    /// Sessions queued or running now.
    pub active: usize,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl Stats {
    /// Counts in a client handed to the worker pool; it stays active until it ends or is
    /// refused, so a drain waits for queued clients too.
    pub(crate) fn session_queued(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a client closed at once, before it was queued.
    pub(crate) fn client_refused(&self, why: Refusal) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.refused_by[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts out a queued client that was closed without a session: the pool handed it
    /// back, no worker took it in time, or, from a load balancer, its PROXY header or the
    /// client it named was refused.
    pub(crate) fn session_refused(&self, why: Refusal) {
        self.client_refused(why);
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// Counts out a queued client reclaimed before its session began (a load balancer's
    /// connection still owing its PROXY header); the reclaim itself was counted when made.
    pub(crate) fn session_dropped(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// Counts what a `udp://` session moved and dropped (a UDP association's counts come
    /// with its log line).
    pub(crate) fn udp_forwarded(&self, up: u64, down: u64, unsendable: u64) {
        self.udp_up.fetch_add(up, Ordering::Relaxed);
        self.udp_down.fetch_add(down, Ordering::Relaxed);
        self.udp_dropped[UdpDrop::Unsendable as usize].fetch_add(unsendable, Ordering::Relaxed);
    }

    /// Counts clients shut down to make room; each still ends as a session of its own.
    pub(crate) fn sessions_reclaimed(&self, count: usize) {
        self.reclaimed.fetch_add(count as u64, Ordering::Relaxed);
    }

    pub(crate) fn session_ended(&self, log: &SessionLog, outcome: Outcome) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.bytes_up.fetch_add(log.up, Ordering::Relaxed);
        self.bytes_down.fetch_add(log.down, Ordering::Relaxed);
        self.ended_by[outcome as usize].fetch_add(1, Ordering::Relaxed);
        for &(version, code) in &log.replies {
            let counter = match (version, code) {
                (5, code) => self.socks5_replies.get(usize::from(code)).unwrap_or(&self.socks5_replies[1]),
                (_, 90) => &self.socks4_replies[0],
                _ => &self.socks4_replies[1],
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(at) = log.http_status.and_then(|status| HTTP_STATUSES.iter().position(|&s| s == status)) {
            self.http_replies[at].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(udp) = &log.udp {
            self.udp_up.fetch_add(udp.up.datagrams, Ordering::Relaxed);
            self.udp_down.fetch_add(udp.down.datagrams, Ordering::Relaxed);
            let d = udp.dropped;
            for (drop, count) in
                UdpDrop::ALL.into_iter().zip([d.foreign, d.fragmented, d.malformed, d.unsendable, d.denied])
            {
                self.udp_dropped[drop as usize].fetch_add(count, Ordering::Relaxed);
            }
        }
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn counters(&self) -> Counters {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Counters {
            sessions_by_outcome: Outcome::ALL.into_iter().map(|o| (o, load(&self.ended_by[o as usize]))).collect(),
            refused_by: Refusal::ALL.into_iter().map(|r| (r, load(&self.refused_by[r as usize]))).collect(),
            reclaimed: load(&self.reclaimed),
            socks5_replies: (0..9u8).map(|code| (code, load(&self.socks5_replies[usize::from(code)]))).collect(),
            socks4_replies: vec![(90, load(&self.socks4_replies[0])), (91, load(&self.socks4_replies[1]))],
            http_replies: HTTP_STATUSES.iter().zip(&self.http_replies).map(|(&s, n)| (s, load(n))).collect(),
            bytes_up: load(&self.bytes_up),
            bytes_down: load(&self.bytes_down),
            udp_up: load(&self.udp_up),
            udp_down: load(&self.udp_down),
            udp_dropped: UdpDrop::ALL.into_iter().map(|d| (d, load(&self.udp_dropped[d as usize]))).collect(),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            sessions: self.sessions.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            reclaimed: self.reclaimed.load(Ordering::Relaxed),
            active: self.active.load(Ordering::SeqCst),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
        }
    }
}
