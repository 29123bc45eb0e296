//! Moving bytes both ways between two connected TCP sockets, after a handshake.
//!
//! Two copy threads, one per direction: the session's worker copies client → target and a
//! thread from the relay pool copies target → client. Half-close is carried through: when
//! one side sends FIN, the write half toward the other is shut down and the other direction
//! goes on until it ends too. An error on either side shuts both sockets down, which wakes
//! the other thread at once.
//!
//! An idle direction holds no buffer: it blocks in a one-byte peek and only takes a buffer
//! from the shared pool once data is there, so an idle session costs two sockets and two
//! parked threads, nothing more.

use crate::message_io::is_timeout;
use crate::pool::{Job, Refused, WorkerPool};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Stack for the pool threads that copy target → client: they only copy and log.
const RELAY_THREAD_STACK: usize = 64 * 1024;
/// Buffers kept for reuse; more than this many idle buffers are freed.
const SPARE_BUFFERS: usize = 16;

/// What the relay needs from the server: threads, buffers and the idle limit.
pub struct Relayer {
    threads: WorkerPool,
    buffers: BufferPool,
    idle_timeout: Option<Duration>,
}

/// How a relayed session ended, with the bytes moved each way.
#[derive(Debug)]
pub struct RelayOutcome {
    /// Client → target.
    pub up: u64,
    /// Target → client.
    pub down: u64,
    pub end: RelayEnd,
}

#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides closed their sending halves.
    Closed,
    /// No byte moved either way for the idle timeout.
    IdleTimeout,
    /// A socket error (a reset, most often) ended both directions.
    Failed(io::Error),
    /// No thread could be had for the second direction.
    NoThread,
}

impl fmt::Display for RelayEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayEnd::Closed => write!(f, "closed"),
            RelayEnd::IdleTimeout => write!(f, "idle timeout"),
            RelayEnd::Failed(e) => write!(f, "error: {e}"),
            RelayEnd::NoThread => write!(f, "refused: no relay thread free"),
        }
    }
}

impl Relayer {
    pub fn new(max_sessions: usize, buffer_size: usize, idle_timeout: Option<Duration>) -> Self {
        Relayer {
            // A TCP session holds at most one relay thread and a UDP association two (one
            // per address family), and sessions are bounded, so this pool never has to queue.
            threads: WorkerPool::new("burrowd-relay", 2 * max_sessions, max_sessions, RELAY_THREAD_STACK),
            buffers: BufferPool { size: buffer_size.max(1), spare: Mutex::new(Vec::new()) },
            idle_timeout,
        }
    }

    /// Runs a session's second copy loop on a relay thread (UDP replies from targets).
    pub fn run_beside(&self, job: Job) -> Result<(), Refused> {
        self.threads.try_execute(job).map_err(|(_, why)| why)
    }

    /// Relays until both directions are done; returns the byte counts and how it ended.
    pub fn relay(self: &Arc<Self>, client: TcpStream, target: TcpStream) -> RelayOutcome {
        let link = Arc::new(Link { client, target, activity: Activity::new() });
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let down_link = Arc::clone(&link);
        let relayer = Arc::clone(self);
        let spawned = self.threads.try_execute(Box::new(move || {
            let down = relayer.copy(&down_link.target, &down_link.client, &down_link);
            let _ = done_tx.send(down);
        }));
        if spawned.is_err() {
            link.abort();
            return RelayOutcome { up: 0, down: 0, end: RelayEnd::NoThread };
        }
        let up = self.copy(&link.client, &link.target, &link);
        let down = done_rx.recv().unwrap_or(Copied { bytes: 0, end: CopyEnd::Eof });
        let end = match (up.end, down.end) {
            (CopyEnd::Failed(e), _) | (_, CopyEnd::Failed(e)) => RelayEnd::Failed(e),
            (CopyEnd::Idle, _) | (_, CopyEnd::Idle) => RelayEnd::IdleTimeout,
            (CopyEnd::Eof, CopyEnd::Eof) => RelayEnd::Closed,
        };
        RelayOutcome { up: up.bytes, down: down.bytes, end }
    }

    /// Copies `src` → `dst` until `src` ends, then passes the FIN on.
    fn copy(&self, src: &TcpStream, dst: &TcpStream, link: &Link) -> Copied {
        let mut copied = Copied { bytes: 0, end: CopyEnd::Eof };
        if let Err(e) = src.set_read_timeout(self.idle_timeout) {
            copied.end = CopyEnd::Failed(e);
        } else {
            copied.end = self.copy_until_end(src, dst, link, &mut copied.bytes);
        }
        match copied.end {
            CopyEnd::Eof => {
                let _ = dst.shutdown(Shutdown::Write);
            }
            CopyEnd::Idle | CopyEnd::Failed(_) => link.abort(),
        }
        copied
    }

    fn copy_until_end(&self, src: &TcpStream, dst: &TcpStream, link: &Link, bytes: &mut u64) -> CopyEnd {
        let mut probe = [0u8; 1];
        loop {
            match src.peek(&mut probe) {
                Ok(0) => return CopyEnd::Eof,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => match self.idle_timeout {
                    Some(limit) if link.activity.idle_for() >= limit => return CopyEnd::Idle,
                    _ => continue,
                },
                Err(e) => return CopyEnd::Failed(e),
            }
            let mut buf = self.buffers.take();
            let burst = copy_burst(src, dst, &mut buf, bytes, &link.activity);
            self.buffers.give(buf);
            match burst {
                Ok(Burst::Drained) => continue,
                Ok(Burst::Eof) => return CopyEnd::Eof,
                Err(e) => return CopyEnd::Failed(e),
            }
        }
    }
}

enum Burst {
    /// What had arrived was copied; back to waiting without a buffer.
    Drained,
    Eof,
}

/// Copies while reads keep filling the buffer, which means more is probably waiting.
fn copy_burst(
    src: &TcpStream,
    dst: &TcpStream,
    buf: &mut [u8],
    bytes: &mut u64,
    activity: &Activity,
) -> io::Result<Burst> {
    loop {
        let n = match (&*src).read(buf) {
            Ok(0) => return Ok(Burst::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        (&*dst).write_all(&buf[..n])?;
        *bytes += n as u64;
        activity.touch();
        if n < buf.len() {
            return Ok(Burst::Drained);
        }
    }
}

struct Copied {
    bytes: u64,
    end: CopyEnd,
}

enum CopyEnd {
    Eof,
    Idle,
    Failed(io::Error),
}

/// The two sockets of one session, shared by its two copy threads without duplicating
/// descriptors.
struct Link {
    client: TcpStream,
    target: TcpStream,
    activity: Activity,
}

impl Link {
    /// Ends both directions: a blocked peek, read or write on either socket returns.
    fn abort(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.target.shutdown(Shutdown::Both);
    }
}

/// When the last byte (or datagram) moved either way, for the idle timeout.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn idle_for(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Relay buffers shared by all sessions, so only directions that are moving data hold one.
struct BufferPool {
    size: usize,
    spare: Mutex<Vec<Box<[u8]>>>,
}

impl BufferPool {
    fn take(&self) -> Box<[u8]> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        spare.unwrap_or_else(|| vec![0; self.size].into_boxed_slice())
    }

    fn give(&self, buf: Box<[u8]>) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_BUFFERS {
            spare.push(buf);
        }
    }
}
