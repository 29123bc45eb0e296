//! Process-wide counters for the shutdown summary and drain.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Default)]
pub struct Stats {
    sessions: AtomicU64,
    refused: AtomicU64,
    active: AtomicUsize,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Sessions served to their end.
    pub sessions: u64,
    /// Clients closed at once because the pool was full.
    pub refused: u64,
    /// Sessions queued or running now.
    pub active: usize,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

impl Stats {
    /// Counts in a client handed to the worker pool; it stays active until it ends or is
    /// refused, so a drain waits for queued clients too.
    pub fn session_queued(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
    }

    pub fn session_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn session_ended(&self, up: u64, down: u64) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.bytes_up.fetch_add(up, Ordering::Relaxed);
        self.bytes_down.fetch_add(down, Ordering::Relaxed);
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sessions: self.sessions.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            active: self.active.load(Ordering::SeqCst),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
        }
    }
}

/// Bytes in the units a person reads: `512 B`, `1.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(35 * 1024 * 1024), "35.0 MiB");
    }
}
