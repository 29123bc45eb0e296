//! Moving bytes both ways between two connected TCP sockets, after a handshake.
//!
//! Two copy threads, one per direction: the session's worker copies client → target and a
//! thread from the relay pool copies target → client. Half-close is carried through: when
//! one side sends FIN, the write half toward the other is shut down and the other direction
//! goes on until it ends too. An error on either side shuts both sockets down, which wakes
//! the other thread at once.
//!
//! Bytes move one of two ways ([`RelayMode`]): through a user-space buffer (the default,
//! and the only way off Linux), or with `--relay splice` on Linux through a pipe
//! (socket → pipe → socket, never entering user space).
//!
//! An idle direction holds no buffer and no pipe: it blocks reading into a small array on
//! its stack and only takes a buffer or a pipe from a shared pool when a burst arrives, so an idle session costs
//! two sockets and two parked threads, nothing more. (Pipes per idle session would not do:
//! two per session would run a busy server out of descriptors.)

use super::is_timeout;
#[cfg(target_os = "linux")]
use super::splice::Pipe;
use super::worker_pool::{Job, Refused, WorkerPool};
use crate::config::RelayMode;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Stack for the pool threads that copy target → client: they only copy and log.
const RELAY_THREAD_STACK: usize = 64 * 1024;
/// Bytes an idle direction reads into its stack while it waits; see `copy_until_end`.
const PROBE_SIZE: usize = 512;
/// Bytes of idle buffers (or pipe capacity) kept for reuse; beyond this they are freed,
/// so a burst of transfers does not pin its peak memory for good.
const SPARE_BYTES: usize = 4 * 1024 * 1024;

/// How many idle buffers or pipes of `size` bytes to keep: at least one.
fn spare_limit(size: usize) -> usize {
    (SPARE_BYTES / size).max(1)
}

/// What the relay needs from the server: threads, buffers and the idle limit.
pub(crate) struct Relayer {
    threads: WorkerPool,
    buffers: BufferPool,
    #[cfg(target_os = "linux")]
    pipes: Option<PipePool>,
    idle_timeout: Option<Duration>,
}

/// How a relayed session ended, with the bytes moved each way.
#[derive(Debug)]
pub(crate) struct RelayOutcome {
    /// Client → target.
    pub up: u64,
    /// Target → client.
    pub down: u64,
    pub end: RelayEnd,
}

#[derive(Debug)]
pub(crate) enum RelayEnd {
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
    /// `buffer_size` is the buffer (copy) or pipe (splice) each moving direction takes.
    /// Splice is only done on Linux; elsewhere every mode copies.
    pub(crate) fn new(
        max_sessions: usize,
        buffer_size: usize,
        mode: RelayMode,
        idle_timeout: Option<Duration>,
    ) -> Self {
        #[cfg(not(target_os = "linux"))]
        let _ = mode;
        Relayer {
            // A TCP session holds at most one relay thread and a UDP association two (one
            // per address family), and sessions are bounded, so this pool never has to queue.
            threads: WorkerPool::new("burrowd-relay", 2 * max_sessions, max_sessions, RELAY_THREAD_STACK),
            buffers: BufferPool {
                size: buffer_size.max(1),
                max_spare: spare_limit(buffer_size.max(1)),
                spare: Mutex::new(Vec::new()),
            },
            #[cfg(target_os = "linux")]
            pipes: (mode == RelayMode::Splice).then(|| PipePool {
                size: buffer_size.max(1),
                max_spare: spare_limit(buffer_size.max(1)),
                spare: Mutex::new(Vec::new()),
            }),
            idle_timeout,
        }
    }

    /// Runs a session's second copy loop on a relay thread (UDP replies from targets).
    pub(crate) fn run_beside(&self, job: Job) -> Result<(), Refused> {
        self.threads.try_execute(job).map_err(|(_, why)| why)
    }

    /// Relays until both directions are done; returns the byte counts and how it ended.
    pub(crate) fn relay(self: &Arc<Self>, client: TcpStream, target: TcpStream) -> RelayOutcome {
        let link = Arc::new(Link {
            client,
            target,
            activity: Activity::new(),
            down: Mutex::new(None),
            down_done: Condvar::new(),
        });
        let down_link = Arc::clone(&link);
        let relayer = Arc::clone(self);
        let spawned = self.threads.try_execute(Box::new(move || {
            let mut report = ReportDown { link: &down_link, copied: None };
            report.copied = Some(relayer.copy(&down_link.target, &down_link.client, &down_link));
        }));
        if spawned.is_err() {
            link.abort();
            return RelayOutcome { up: 0, down: 0, end: RelayEnd::NoThread };
        }
        let up = self.copy(&link.client, &link.target, &link);
        let down = link.wait_down();
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
        // The wait for data reads into a small stack array, not a pool buffer or pipe: a
        // small message (an interactive session's usual traffic) is then passed on with one
        // read and one write, and only a full probe means a burst worth a buffer or pipe.
        let mut probe = [0u8; PROBE_SIZE];
        loop {
            let n = match (&*src).read(&mut probe) {
                Ok(0) => return CopyEnd::Eof,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => match self.idle_timeout {
                    Some(limit) if link.activity.idle_for() >= limit => return CopyEnd::Idle,
                    _ => continue,
                },
                Err(e) => return CopyEnd::Failed(e),
            };
            if let Err(e) = (&*dst).write_all(&probe[..n]) {
                return CopyEnd::Failed(e);
            }
            *bytes += n as u64;
            link.activity.touch();
            if n < probe.len() {
                continue;
            }
            match self.burst(src, dst, bytes, &link.activity) {
                Ok(Burst::Drained) => continue,
                Ok(Burst::Eof) => return CopyEnd::Eof,
                Err(e) => return CopyEnd::Failed(e),
            }
        }
    }
}

impl Relayer {
    /// Moves what has arrived on `src`, holding a pipe or buffer only while it does.
    fn burst(&self, src: &TcpStream, dst: &TcpStream, bytes: &mut u64, activity: &Activity) -> io::Result<Burst> {
        #[cfg(target_os = "linux")]
        if let Some(pipes) = &self.pipes {
            match pipes.take() {
                Ok(pipe) => return pipes.splice_burst(pipe, src, dst, bytes, activity),
                // Out of descriptors: this burst goes through a buffer instead of failing.
                Err(e) => log::debug!("no pipe for the relay ({e}); copying through a buffer"),
            }
        }
        let mut buf = self.buffers.take();
        let burst = copy_burst(src, dst, &mut buf, bytes, activity);
        self.buffers.give(buf);
        burst
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

/// Pipes shared by all sessions, like [`BufferPool`]; a pipe goes back only when empty.
#[cfg(target_os = "linux")]
struct PipePool {
    size: usize,
    max_spare: usize,
    spare: Mutex<Vec<Pipe>>,
}

#[cfg(target_os = "linux")]
impl PipePool {
    fn take(&self) -> io::Result<Pipe> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        spare.map_or_else(|| Pipe::new(self.size), Ok)
    }

    fn give_empty(&self, pipe: Pipe) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < self.max_spare {
            spare.push(pipe);
        }
    }

    /// [`copy_burst`] through `pipe`: splice in what has arrived, splice all of it out.
    /// A pipe left holding bytes by a failed write is dropped, never reused.
    fn splice_burst(
        &self,
        pipe: Pipe,
        src: &TcpStream,
        dst: &TcpStream,
        bytes: &mut u64,
        activity: &Activity,
    ) -> io::Result<Burst> {
        loop {
            // A failed or empty fill moved nothing, so the pipe is still empty.
            let n = match pipe.fill_from(src, pipe.capacity()) {
                Ok(0) => {
                    self.give_empty(pipe);
                    return Ok(Burst::Eof);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.give_empty(pipe);
                    // A read timeout here goes back to the idle wait, which judges it.
                    return if is_timeout(&e) { Ok(Burst::Drained) } else { Err(e) };
                }
            };
            let mut left = n;
            while left > 0 {
                match pipe.drain_to(dst, left) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            *bytes += n as u64;
            activity.touch();
            if n < pipe.capacity() {
                self.give_empty(pipe);
                return Ok(Burst::Drained);
            }
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
    /// The target → client result, for the thread that copies the other way. A lock and a
    /// condition variable rather than a channel: the waiter parks at once instead of
    /// spinning and yielding first, and nothing more is allocated per session.
    down: Mutex<Option<Copied>>,
    down_done: Condvar,
}

/// Hands the down direction's result over when dropped, so that even a panicking copy
/// (caught by the pool) never leaves the other thread waiting.
struct ReportDown<'a> {
    link: &'a Link,
    copied: Option<Copied>,
}

impl Drop for ReportDown<'_> {
    fn drop(&mut self) {
        let copied = self.copied.take().unwrap_or(Copied { bytes: 0, end: CopyEnd::Eof });
        *self.link.down.lock().unwrap_or_else(|p| p.into_inner()) = Some(copied);
        self.link.down_done.notify_one();
    }
}

impl Link {
    fn wait_down(&self) -> Copied {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match down.take() {
                Some(copied) => return copied,
                None => down = self.down_done.wait(down).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    /// Ends both directions: a blocked read or write on either socket returns.
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
    max_spare: usize,
    spare: Mutex<Vec<Box<[u8]>>>,
}

impl BufferPool {
    fn take(&self) -> Box<[u8]> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        spare.unwrap_or_else(|| vec![0; self.size].into_boxed_slice())
    }

    fn give(&self, buf: Box<[u8]>) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < self.max_spare {
            spare.push(buf);
        }
    }
}
