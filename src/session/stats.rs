//! Process-wide counters for the shutdown summary and drain.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Default)]
pub(crate) struct Stats {
    sessions: AtomicU64,
    refused: AtomicU64,
    reclaimed: AtomicU64,
    active: AtomicUsize,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Sessions served to their end.
    pub sessions: u64,
    /// Clients closed at once, for a limit: the workers, the queue, an address's share.
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
    pub(crate) fn client_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts out a queued client that the pool handed back.
    pub(crate) fn session_refused(&self) {
        self.client_refused();
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// Counts clients shut down to make room; each still ends as a session of its own.
    pub(crate) fn sessions_reclaimed(&self, count: usize) {
        self.reclaimed.fetch_add(count as u64, Ordering::Relaxed);
    }

    pub(crate) fn session_ended(&self, up: u64, down: u64) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.bytes_up.fetch_add(up, Ordering::Relaxed);
        self.bytes_down.fetch_add(down, Ordering::Relaxed);
        self.active.fetch_sub(1, Ordering::SeqCst);
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
