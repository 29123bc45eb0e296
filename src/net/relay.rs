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
//!
//! Two limits end a session that has stopped moving, and never one that moves: the idle
//! timeout (no byte either way) and the half-close timeout (after one side's FIN, no byte
//! the other way). A byte counts when the kernel takes it, so a peer that stops reading is
//! caught like one that stops sending: every write has a timeout, and each partial write
//! is progress. After a FIN the direction still open is judged by itself (the worker's) or
//! watched by the worker (the relay thread's): see `Link::finish`. Whatever ends
//! a session is recorded first, so what the other thread then sees of our own shutdown
//! (an EOF, a broken pipe) never passes for a peer's error.
//!
//! The limits are socket timeouts (SO_RCVTIMEO, SO_SNDTIMEO) except on Windows, which
//! documents a socket whose receive or send timed out as being in an indeterminate state.
//! There the sockets are non-blocking: each direction waits for readiness (WSAPoll) and only
//! then reads or writes, so no call ever times out mid-stream. It waits in slices of
//! [`WINDOWS_LOOK`], looking between them for a cut, since a shutdown from the other thread
//! does not wake every wait (it does not under Wine).

use super::is_timeout;
use super::readiness;
#[cfg(target_os = "linux")]
use super::splice::Pipe;
#[cfg(not(windows))]
use super::stack;
use super::worker_pool::{Job, Refused, WorkerPool};
use crate::config::RelayMode;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Stack for the pool threads that copy target → client: they only copy and log.
const RELAY_THREAD_STACK: usize = 64 * 1024;
/// Bytes an idle direction reads into its stack while it waits; see `copy_until_fin`.
const PROBE_SIZE: usize = 512;
/// How long the worker's direction waits for the client before the worker gives back the
/// stack pages its handshake touched below the relay ([`stack::release_unused`]). A
/// session that moves bytes or ends sooner never pays for a release: an madvise whose TLB
/// flush interrupts every CPU, then a page fault when the next handshake touches the page
/// again. Done for every session, that was 13% of the CPU a short session costs (perf,
/// under the benchmark's handshake load); done here, an idle session still keeps two
/// stack pages rather than three.
#[cfg(not(windows))]
const STACK_SETTLE: Duration = Duration::from_millis(250);
/// On Windows, the longest a direction waits for readiness before it looks again at the
/// limits and at whether the session was cut.
#[cfg(windows)]
const WINDOWS_LOOK: Duration = Duration::from_millis(250);
/// Bytes of idle buffers (or pipe capacity) kept for reuse; beyond this they are freed,
/// so a burst of transfers does not pin its peak memory for good.
const SPARE_BYTES: usize = 4 * 1024 * 1024;

/// How many idle buffers or pipes of `size` bytes to keep: at least one.
fn spare_limit(size: usize) -> usize {
    (SPARE_BYTES / size).max(1)
}

/// What the relay needs from the server: threads, buffers and the limits.
pub(crate) struct Relayer {
    threads: WorkerPool,
    buffers: BufferPool,
    #[cfg(target_os = "linux")]
    pipes: Option<PipePool>,
    limits: Limits,
}

/// How long a session may move nothing before it is ended.
#[derive(Clone, Copy)]
struct Limits {
    /// Either way, at any time; `None` never.
    idle: Option<Duration>,
    /// The direction still open once the other has passed its FIN on.
    half_close: Duration,
}

impl Limits {
    /// Every write is bounded by the shorter limit, so a write to a peer that has stopped
    /// reading is judged like a read from one that has stopped sending.
    fn write_timeout(&self) -> Duration {
        crate::config::relay_write_timeout(self.idle, self.half_close)
    }

    /// How long a read for `dir` waits before the direction looks at the limits. The
    /// worker's direction judges the half-close timeout itself after the target's FIN (see
    /// [`Link::finish`]), so its reads never wait longer than that timeout either.
    #[cfg(not(windows))]
    fn read_wait(&self, dir: Direction) -> Option<Duration> {
        match dir {
            Direction::Up => Some(self.write_timeout()),
            Direction::Down => self.idle,
        }
    }
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
    IdleTimeout(Duration),
    /// `closed` had sent its FIN, and the other direction then moved no byte for the
    /// half-close timeout (`limit`).
    HalfCloseTimeout { closed: Side, stall: Stall, limit: Duration },
    /// A socket error on one side (a reset, most often) ended both directions.
    Failed(Side, io::Error),
    /// No thread could be had for the second direction.
    NoThread,
}

/// One end of a session.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    Client = 0,
    /// Whatever the client is relayed to: the CONNECT target, a BIND's peer, a forward's target.
    Target,
}

/// Why the direction still open after a FIN moved nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stall {
    /// The side that had not closed sent nothing.
    Silent,
    /// The side that had closed stopped reading what it was sent.
    NotReading,
}

impl fmt::Display for RelayEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayEnd::Closed => write!(f, "closed"),
            RelayEnd::IdleTimeout(limit) => write!(f, "idle timeout: no byte either way for {limit:?}"),
            RelayEnd::HalfCloseTimeout { closed, stall: Stall::Silent, limit } => {
                write!(
                    f,
                    "half-close timeout: the {} sent nothing for {limit:?} after the {closed}'s FIN",
                    closed.other()
                )
            }
            RelayEnd::HalfCloseTimeout { closed, stall: Stall::NotReading, limit } => {
                write!(f, "half-close timeout: the {closed} read nothing for {limit:?} after its FIN")
            }
            RelayEnd::Failed(side, e) => write!(f, "{side} error: {e}"),
            RelayEnd::NoThread => write!(f, "refused: no relay thread free"),
        }
    }
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Client => Side::Target,
            Side::Target => Side::Client,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Target => "target",
        })
    }
}

/// One of a session's two copy loops.
#[derive(Clone, Copy)]
enum Direction {
    /// Client → target, on the session's worker.
    Up,
    /// Target → client, on a relay thread.
    Down,
}

impl Direction {
    fn source(self) -> Side {
        match self {
            Direction::Up => Side::Client,
            Direction::Down => Side::Target,
        }
    }

    fn dest(self) -> Side {
        self.source().other()
    }

    fn other(self) -> Direction {
        match self {
            Direction::Up => Direction::Down,
            Direction::Down => Direction::Up,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether this direction's first wait is cut short at [`STACK_SETTLE`] to give back
    /// the stack pages its thread's handshake touched: only the worker's has any, and only
    /// Linux gives pages back.
    #[cfg(not(windows))]
    fn settles_stack(self, read_wait: Option<Duration>) -> bool {
        cfg!(target_os = "linux") && matches!(self, Direction::Up) && read_wait.is_none_or(|wait| wait > STACK_SETTLE)
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
        half_close_timeout: Duration,
    ) -> Self {
        #[cfg(not(target_os = "linux"))]
        let _ = mode;
        Relayer {
            // A TCP session holds at most one relay thread and a UDP association two (one
            // per address family), and sessions are bounded, so this pool never has to queue.
            threads: WorkerPool::new("burrowd-relay", max_sessions.saturating_mul(2), max_sessions, RELAY_THREAD_STACK),
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
            limits: Limits { idle: idle_timeout, half_close: half_close_timeout },
        }
    }

    /// Runs a session's second copy loop on a relay thread (UDP replies from targets).
    pub(crate) fn run_beside(&self, job: Job) -> Result<(), Refused> {
        self.threads.try_execute(job).map_err(|(_, why)| why)
    }

    /// Relays until both directions are done; returns the byte counts and how it ended.
    /// `meter` shows the session's bytes and last byte to whoever looks while it runs.
    /// `client` must carry the relay's write timeout (`Config::client_timeouts`), as every
    /// client does from its listener. `target` must come without a read timeout: one freshly
    /// connected or accepted does, and a chain's negotiation clears its own
    /// (`Negotiation::into_target_stream`). Each direction then sets only what it lacks.
    pub(crate) fn relay(self: &Arc<Self>, client: TcpStream, target: TcpStream, meter: Arc<Meter>) -> RelayOutcome {
        let link = Arc::new(Link::new(client, target, self.limits, meter));
        let down_link = Arc::clone(&link);
        let relayer = Arc::clone(self);
        let spawned = self.threads.try_execute(Box::new(move || {
            let mut report = Report { link: &down_link, dir: Direction::Down, copied: None };
            report.copied = Some(relayer.copy(Direction::Down, &down_link));
        }));
        if spawned.is_err() {
            link.abort();
            return RelayOutcome { up: 0, down: 0, end: RelayEnd::NoThread };
        }
        let up = self.copy(Direction::Up, &link);
        link.finish(Direction::Up, up);
        link.outcome()
    }

    /// Copies `dir` until its source sends FIN, then passes the FIN on. Anything else that
    /// ends it (a limit, an error) ends the whole session.
    fn copy(&self, dir: Direction, link: &Link) -> Copied {
        let mut bytes = 0;
        match self.copy_until_fin(dir, link, &mut bytes) {
            Ok(()) => {
                // After the other direction's FIN the session ends with this one, and the
                // close that follows at once sends this FIN: a shutdown would be one more call.
                if !link.closed(dir.other()) {
                    let _ = link.sockets(dir).1.shutdown(Shutdown::Write);
                }
                // The FIN is news too: the half-close timeout counts from it, not from the
                // last byte before it.
                link.progress.moved.last_byte.touch();
                Copied { bytes, fin: true }
            }
            Err(end) => {
                link.cut(end);
                Copied { bytes, fin: false }
            }
        }
    }

    fn copy_until_fin(&self, dir: Direction, link: &Link, bytes: &mut u64) -> Result<(), RelayEnd> {
        let (src, dst) = link.sockets(dir);
        #[cfg(not(windows))]
        let mut settling = link.arm(dir)?;
        #[cfg(windows)]
        {
            src.set_nonblocking(true).map_err(|e| RelayEnd::Failed(dir.source(), e))?;
            dst.set_nonblocking(true).map_err(|e| RelayEnd::Failed(dir.dest(), e))?;
        }
        // The wait for data reads into a small stack array, not a pool buffer or pipe: a
        // small message (an interactive session's usual traffic) is then passed on with one
        // read and one write, and only a full probe means a burst worth a buffer or pipe.
        let mut probe = [0u8; PROBE_SIZE];
        loop {
            #[cfg(windows)]
            link.await_input(dir)?;
            let n = match (&*src).read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    link.read_failed(dir, e)?;
                    #[cfg(not(windows))]
                    link.rearm(dir, &mut settling)?;
                    continue;
                }
            };
            let data = &probe[..n];
            link.write_out(dir, n, |left| (&*dst).write(&data[n - left..]), bytes)?;
            if n == probe.len() && input_waiting(src) && matches!(self.burst(dir, link, bytes)?, Burst::Eof) {
                return Ok(());
            }
        }
    }

    /// Moves what has arrived for `dir`, holding a pipe or buffer only while it does.
    fn burst(&self, dir: Direction, link: &Link, bytes: &mut u64) -> Result<Burst, RelayEnd> {
        #[cfg(target_os = "linux")]
        if let Some(pipes) = &self.pipes {
            match pipes.take() {
                Ok(pipe) => return pipes.splice_burst(pipe, dir, link, bytes),
                // Out of descriptors: this burst goes through a buffer instead of failing.
                Err(e) => log::debug!("no pipe for the relay ({e}); copying through a buffer"),
            }
        }
        let mut buf = self.buffers.take();
        let burst = copy_burst(dir, link, &mut buf, bytes);
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
fn copy_burst(dir: Direction, link: &Link, buf: &mut [u8], bytes: &mut u64) -> Result<Burst, RelayEnd> {
    let (src, dst) = link.sockets(dir);
    loop {
        let n = match (&*src).read(buf) {
            Ok(0) => return Ok(Burst::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A read timeout that ends nothing goes back to the wait, without the buffer.
            Err(e) => return link.read_failed(dir, e).map(|()| Burst::Drained),
        };
        let data = &buf[..n];
        link.write_out(dir, n, |left| (&*dst).write(&data[n - left..]), bytes)?;
        if n < buf.len() || !input_waiting(src) {
            return Ok(Burst::Drained);
        }
    }
}

/// Whether a read from `src` would return at once: bytes, the end of the stream or an
/// error are waiting. A burst reads only then, so a direction never waits holding a buffer
/// or a pipe, even after a read that filled one exactly. A look that fails says yes: the
/// read then reports the error.
fn input_waiting(src: &TcpStream) -> bool {
    readiness::readable_within(src, Duration::ZERO).unwrap_or(true)
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
    fn splice_burst(&self, pipe: Pipe, dir: Direction, link: &Link, bytes: &mut u64) -> Result<Burst, RelayEnd> {
        let (src, dst) = link.sockets(dir);
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
                    return link.read_failed(dir, e).map(|()| Burst::Drained);
                }
            };
            link.write_out(dir, n, |left| pipe.drain_to(dst, left), bytes)?;
            if n < pipe.capacity() || !input_waiting(src) {
                self.give_empty(pipe);
                return Ok(Burst::Drained);
            }
        }
    }
}

struct Copied {
    bytes: u64,
    /// Its source sent FIN, and the FIN was passed on.
    fin: bool,
}

/// The two sockets of one session, shared by its two copy threads without duplicating
/// descriptors, and what each thread must know of the other.
struct Link {
    client: TcpStream,
    target: TcpStream,
    limits: Limits,
    meter: Arc<Meter>,
    progress: Progress,
    /// A lock and a condition variable rather than a channel: the waiter parks at once
    /// instead of spinning and yielding first, and nothing more is allocated per session.
    ends: Mutex<Ends>,
    changed: Condvar,
}

/// How each direction ended, and why the session was cut short.
#[derive(Default)]
struct Ends {
    /// By [`Direction::index`]; `None` while that direction is still copying.
    copied: [Option<Copied>; 2],
    /// The first reason only: once a limit or a peer's error has shut the sockets down,
    /// what the other direction sees of that shutdown is not news.
    cut: Option<RelayEnd>,
    /// Threads waiting on `changed`: a notify with none costs a system call for nothing.
    waiting: u8,
}

/// Reports a direction done when dropped, so that even a panicking copy (caught by the
/// pool) never leaves the other thread waiting. After a FIN that is also where it
/// watches the other direction ([`Link::finish`]).
struct Report<'a> {
    link: &'a Link,
    dir: Direction,
    copied: Option<Copied>,
}

impl Drop for Report<'_> {
    fn drop(&mut self) {
        let copied = self.copied.take().unwrap_or(Copied { bytes: 0, fin: false });
        self.link.finish(self.dir, copied);
    }
}

impl Link {
    fn new(client: TcpStream, target: TcpStream, limits: Limits, meter: Arc<Meter>) -> Self {
        Link {
            client,
            target,
            limits,
            progress: Progress::new(Arc::clone(&meter)),
            meter,
            ends: Mutex::new(Ends::default()),
            changed: Condvar::new(),
        }
    }

    /// The socket `dir` reads from and the one it writes to.
    fn sockets(&self, dir: Direction) -> (&TcpStream, &TcpStream) {
        match dir {
            Direction::Up => (&self.client, &self.target),
            Direction::Down => (&self.target, &self.client),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ends> {
        self.ends.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `len` bytes to `dir`'s destination with `write`, which is told how many are
    /// left. Each write that moves bytes counts as progress, however few; one that times
    /// out is judged like a quiet read, and tried again unless a limit has passed.
    fn write_out(
        &self,
        dir: Direction,
        len: usize,
        mut write: impl FnMut(usize) -> io::Result<usize>,
        bytes: &mut u64,
    ) -> Result<(), RelayEnd> {
        let mut left = len;
        while left > 0 {
            self.progress.write_begins(dir);
            let written = write(left);
            self.progress.write_ends(dir, matches!(written, Ok(n) if n > 0));
            match written {
                Ok(0) => return Err(RelayEnd::Failed(dir.dest(), io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    left -= n;
                    *bytes += n as u64;
                    self.meter.count(dir, n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if let Some(end) = self.limit_passed(dir, Stall::NotReading) {
                        return Err(end);
                    }
                    #[cfg(windows)]
                    self.await_room(dir)?;
                }
                Err(e) => return Err(RelayEnd::Failed(dir.dest(), e)),
            }
        }
        Ok(())
    }

    /// Waits until `dir`'s source has something to read, ending the direction if a limit
    /// passes first. Once the session is cut, it ends without a read: what ended the
    /// session is recorded already, so the end returned here is not news.
    #[cfg(windows)]
    fn await_input(&self, dir: Direction) -> Result<(), RelayEnd> {
        let src = self.sockets(dir).0;
        loop {
            if self.lock().cut.is_some() {
                return Err(RelayEnd::Failed(dir.source(), io::ErrorKind::ConnectionAborted.into()));
            }
            let wait = self.limits.idle.map_or(WINDOWS_LOOK, |idle| idle.min(WINDOWS_LOOK));
            if readiness::readable_within(src, wait).map_err(|e| RelayEnd::Failed(dir.source(), e))? {
                return Ok(());
            }
            if let Some(end) = self.limit_passed(dir, Stall::Silent) {
                return Err(end);
            }
        }
    }

    /// After a write found no room, waits up to one look for room in `dir`'s destination.
    /// Meanwhile the direction counts as inside a write, so only it judges whether its
    /// peer has stopped reading; no byte moves while it waits, so the wait counts as quiet.
    #[cfg(windows)]
    fn await_room(&self, dir: Direction) -> Result<(), RelayEnd> {
        let dst = self.sockets(dir).1;
        self.progress.awaiting_room[dir.index()].store(true, Ordering::SeqCst);
        let room = readiness::writable_within(dst, self.limits.write_timeout().min(WINDOWS_LOOK));
        self.progress.awaiting_room[dir.index()].store(false, Ordering::SeqCst);
        room.map(drop).map_err(|e| RelayEnd::Failed(dir.dest(), e))
    }

    /// A read for `dir` failed: a timeout is `Ok` (wait on) unless a limit has passed;
    /// anything else is the source's error.
    fn read_failed(&self, dir: Direction, e: io::Error) -> Result<(), RelayEnd> {
        if !is_timeout(&e) {
            return Err(RelayEnd::Failed(dir.source(), e));
        }
        self.limit_passed(dir, Stall::Silent).map_or(Ok(()), Err)
    }

    /// After `dir` waited a whole read or write timeout for nothing: the session's end if
    /// a limit has passed.
    fn limit_passed(&self, dir: Direction, stall: Stall) -> Option<RelayEnd> {
        let half_closed = self.closed(dir.other());
        self.expired_limit(self.progress.still_for(), half_closed, dir, stall)
    }

    /// The limit that `still`, the time with nothing moving, has run out, the shorter if
    /// both have. `open` is the direction being judged; `half_closed`, whether the other has
    /// passed a FIN on.
    fn expired_limit(&self, still: Duration, half_closed: bool, open: Direction, stall: Stall) -> Option<RelayEnd> {
        let idle = self.limits.idle.map(|limit| (limit, RelayEnd::IdleTimeout(limit)));
        let half_close = half_closed.then(|| {
            let limit = self.limits.half_close;
            (limit, RelayEnd::HalfCloseTimeout { closed: open.dest(), stall, limit })
        });
        [idle, half_close]
            .into_iter()
            .flatten()
            .filter(|(limit, _)| still >= *limit)
            .min_by_key(|(limit, _)| *limit)
            .map(|(_, end)| end)
    }

    /// Whether `dir` has ended with its FIN passed on.
    fn closed(&self, dir: Direction) -> bool {
        matches!(self.lock().copied[dir.index()], Some(Copied { fin: true, .. }))
    }

    /// Ends the session for `end`, unless something ended it first.
    fn cut(&self, end: RelayEnd) {
        self.lock().cut.get_or_insert(end);
        self.abort();
    }

    /// Ends both directions: a blocked read or write on either socket returns.
    fn abort(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.target.shutdown(Shutdown::Both);
    }

    /// Records that `dir` is done. If the client's direction ended with a FIN, the worker
    /// then watches the target's, which goes on alone, and cuts the session once that has
    /// waited to read for the half-close timeout with nothing moving. After the target's
    /// FIN nobody watches: the worker's direction judges itself, since its reads never
    /// wait longer than the half-close timeout ([`Limits::read_wait`]; on Windows, every
    /// look does), so the relay thread goes back to its pool at once, with no wake-up to
    /// wait for. A direction inside a write judges itself when the write times out: only
    /// it learns whether the write moved bytes.
    fn finish(&self, dir: Direction, copied: Copied) {
        let fin = copied.fin;
        let open = dir.other();
        if fin {
            self.meter.closed_by.store(dir.source() as u8 + 1, Ordering::Relaxed);
        }
        let mut ends = self.lock();
        ends.copied[dir.index()] = Some(copied);
        let news_for = ends.waiting > 0;
        let watch = matches!(open, Direction::Down) && fin && ends.copied[open.index()].is_none() && ends.cut.is_none();
        if !watch {
            // Woken after the lock is let go, the waiter does not block on it at once.
            drop(ends);
            if news_for {
                self.changed.notify_all();
            }
            return;
        }
        if news_for {
            self.changed.notify_all();
        }
        while fin && ends.copied[open.index()].is_none() && ends.cut.is_none() {
            let wait = if self.progress.is_writing(open) {
                self.limits.half_close
            } else {
                let still = self.progress.still_for();
                if let Some(end) = self.expired_limit(still, true, open, Stall::Silent) {
                    ends.cut = Some(end);
                    drop(ends);
                    self.abort();
                    return;
                }
                self.limits.half_close.saturating_sub(still)
            };
            ends = self.wait(ends, Some(wait));
        }
    }

    /// Sets the timeouts `dir`'s sockets lack for the relay; returns whether its first
    /// read waits only [`STACK_SETTLE`] (see [`Direction::settles_stack`]).
    #[cfg(not(windows))]
    fn arm(&self, dir: Direction) -> Result<bool, RelayEnd> {
        let (src, dst) = self.sockets(dir);
        let read_wait = self.limits.read_wait(dir);
        let settling = dir.settles_stack(read_wait);
        let first_wait = if settling { Some(STACK_SETTLE) } else { read_wait };
        // A target comes without a read timeout (see `relay`); the client comes with its
        // handshake's, which must go.
        if matches!(dir, Direction::Up) || first_wait.is_some() {
            src.set_read_timeout(first_wait).map_err(|e| RelayEnd::Failed(dir.source(), e))?;
        }
        // The client carries the write timeout already (see `relay`); the target does not.
        if matches!(dir, Direction::Up) {
            dst.set_write_timeout(Some(self.limits.write_timeout())).map_err(|e| RelayEnd::Failed(dir.dest(), e))?;
        }
        Ok(settling)
    }

    /// After a quiet read of `dir` that ended nothing: a worker that was `settling` gives
    /// its stack pages back, and the next read's wait changes where it must: after the
    /// settle, to the whole read wait; after the target's FIN, to what is left of the
    /// half-close timeout, which the worker's direction judges itself.
    #[cfg(not(windows))]
    fn rearm(&self, dir: Direction, settling: &mut bool) -> Result<(), RelayEnd> {
        let settled = std::mem::take(settling);
        if settled {
            stack::release_unused();
        }
        let wait = match self.half_close_left(dir) {
            Some(left) => Some(left),
            None if settled => self.limits.read_wait(dir),
            None => return Ok(()),
        };
        self.sockets(dir).0.set_read_timeout(wait).map_err(|e| RelayEnd::Failed(dir.source(), e))
    }

    /// For the worker's direction once the target's FIN has passed: how long its next read
    /// may wait before the half-close timeout passes (at least a millisecond, as a socket
    /// timeout of zero means none). `None` for any other direction, or before that FIN.
    #[cfg(not(windows))]
    fn half_close_left(&self, dir: Direction) -> Option<Duration> {
        if !matches!(dir, Direction::Up) || !self.closed(Direction::Down) {
            return None;
        }
        let left = self.limits.write_timeout().saturating_sub(self.progress.still_for());
        Some(left.max(Duration::from_millis(1)))
    }

    /// Waits until both directions are done.
    fn outcome(&self) -> RelayOutcome {
        let mut ends = self.lock();
        loop {
            if let [Some(up), Some(down)] = &ends.copied {
                let (up, down) = (up.bytes, down.bytes);
                let end = ends.cut.take().unwrap_or(RelayEnd::Closed);
                return RelayOutcome { up, down, end };
            }
            ends = self.wait(ends, None);
        }
    }

    /// Waits for the other direction's news, or `timeout`.
    fn wait<'a>(&self, mut ends: MutexGuard<'a, Ends>, timeout: Option<Duration>) -> MutexGuard<'a, Ends> {
        ends.waiting += 1;
        let mut ends = match timeout {
            Some(timeout) => self.changed.wait_timeout(ends, timeout).unwrap_or_else(|p| p.into_inner()).0,
            None => self.changed.wait(ends).unwrap_or_else(|p| p.into_inner()),
        };
        ends.waiting -= 1;
        ends
    }
}

/// What the limits judge by: when a byte last moved either way, and which directions are
/// inside a write. A write's bytes are only known when it returns, so the quiet since the
/// last byte is only certain up to the start of the oldest write under way; counting past
/// it could cut a transfer that is moving.
struct Progress {
    /// The session's meter, whose last-byte clock is the one the limits judge by.
    moved: Arc<Meter>,
    /// By [`Direction::index`]: when the write under way began, on `moved`'s clock, or
    /// `NOT_WRITING`.
    writing_since_ms: [AtomicU64; 2],
    /// By [`Direction::index`]: waiting for room to write (Windows, where writes never block).
    #[cfg(windows)]
    awaiting_room: [std::sync::atomic::AtomicBool; 2],
}

const NOT_WRITING: u64 = u64::MAX;

impl Progress {
    fn new(meter: Arc<Meter>) -> Self {
        Progress {
            moved: meter,
            writing_since_ms: [AtomicU64::new(NOT_WRITING), AtomicU64::new(NOT_WRITING)],
            #[cfg(windows)]
            awaiting_room: Default::default(),
        }
    }

    fn write_begins(&self, dir: Direction) {
        self.writing_since_ms[dir.index()].store(self.moved.last_byte.now_ms(), Ordering::SeqCst);
    }

    /// The bytes are counted before the write is marked over, so a judge that sees it over
    /// also sees them.
    fn write_ends(&self, dir: Direction, moved_bytes: bool) {
        if moved_bytes {
            self.moved.last_byte.touch();
        }
        self.writing_since_ms[dir.index()].store(NOT_WRITING, Ordering::SeqCst);
    }

    fn is_writing(&self, dir: Direction) -> bool {
        #[cfg(windows)]
        if self.awaiting_room[dir.index()].load(Ordering::SeqCst) {
            return true;
        }
        self.writing_since_ms[dir.index()].load(Ordering::SeqCst) != NOT_WRITING
    }

    /// How long nothing has certainly moved either way.
    fn still_for(&self) -> Duration {
        let now = self.moved.last_byte.now_ms();
        let certain_until = self.writing_since_ms.iter().map(|since| since.load(Ordering::SeqCst)).fold(now, u64::min);
        Duration::from_millis(certain_until.saturating_sub(self.moved.last_byte.last_ms.load(Ordering::SeqCst)))
    }
}

/// A session's traffic as it goes, for anyone who looks while it runs (the status page):
/// bytes each way, when the last one moved, and whether one side has sent its FIN.
#[derive(Default)]
pub(crate) struct Meter {
    up: AtomicU64,
    down: AtomicU64,
    last_byte: Activity,
    /// 0 while both sides send; else 1 + the [`Side`] whose FIN was passed on first.
    closed_by: AtomicU8,
}

impl Meter {
    fn count(&self, dir: Direction, bytes: u64) {
        let counter = match dir {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        };
        // The clock is the Progress's to touch, once the write is over.
        counter.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts what moved outside a [`Link`]: a UDP association's or forward's datagrams,
    /// a forwarded HTTP request and its response.
    pub(crate) fn count_moved(&self, up: u64, down: u64) {
        self.up.fetch_add(up, Ordering::Relaxed);
        self.down.fetch_add(down, Ordering::Relaxed);
        self.last_byte.touch();
    }

    /// Bytes client → target and target → client so far.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (self.up.load(Ordering::Relaxed), self.down.load(Ordering::Relaxed))
    }

    /// How long since a byte last moved either way (since the start, if none has).
    pub(crate) fn idle_for(&self) -> Duration {
        self.last_byte.idle_for()
    }

    /// The side that has sent its FIN while the other still sends, if one has.
    pub(crate) fn half_closed_by(&self) -> Option<Side> {
        match self.closed_by.load(Ordering::Relaxed) {
            1 => Some(Side::Client),
            2 => Some(Side::Target),
            _ => None,
        }
    }
}

/// When the last byte (or datagram) moved either way, for the idle timeout.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity { start: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn idle_for(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// The clock `touch` keeps: milliseconds since this was made.
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    /// Far beyond any limit below: a relay still running then never ends by itself.
    const GIVE_UP: Duration = Duration::from_secs(10);

    fn modes() -> Vec<RelayMode> {
        if cfg!(target_os = "linux") { vec![RelayMode::Splice, RelayMode::Copy] } else { vec![RelayMode::Copy] }
    }

    /// Two connected loopback sockets: (ours, the peer's).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, peer)
    }

    /// Relays on a thread of its own; returns the client's and the target's ends and the
    /// outcome to come.
    fn relay(relayer: Relayer) -> (TcpStream, TcpStream, mpsc::Receiver<RelayOutcome>) {
        let (client, client_end) = client_pair(&relayer);
        let (target, target_end) = pair();
        let (done, outcome) = mpsc::channel();
        let relayer = Arc::new(relayer);
        thread::spawn(move || done.send(relayer.relay(client, target, Arc::default())));
        (client_end, target_end, outcome)
    }

    /// [`pair`], ours with the write timeout a client has from its listener.
    fn client_pair(relayer: &Relayer) -> (TcpStream, TcpStream) {
        let (client, client_end) = pair();
        client.set_write_timeout(Some(relayer.limits.write_timeout())).unwrap();
        (client, client_end)
    }

    fn relayer(mode: RelayMode, idle: Option<Duration>, half_close: Duration) -> Relayer {
        Relayer::new(4, 64 * 1024, mode, idle, half_close)
    }

    /// Writes to `stream` until it fails or [`GIVE_UP`] passes.
    fn stream_into(mut stream: TcpStream) {
        stream.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
        let started = Instant::now();
        let chunk = [b'x'; 16 * 1024];
        while started.elapsed() < GIVE_UP {
            match stream.write(&chunk) {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            }
        }
    }

    #[test]
    fn a_silent_target_after_the_clients_fin_ends_as_a_half_close_timeout() {
        for mode in modes() {
            let (client, _target, outcome) = relay(relayer(mode, None, Duration::from_millis(200)));
            client.shutdown(Shutdown::Write).unwrap();
            let end = outcome.recv_timeout(GIVE_UP).unwrap().end;
            assert!(
                matches!(end, RelayEnd::HalfCloseTimeout { closed: Side::Client, stall: Stall::Silent, .. }),
                "{mode:?}: {end}"
            );
        }
    }

    #[test]
    fn after_the_targets_fin_no_relay_thread_waits_for_the_client() {
        for mode in modes() {
            // A half-close timeout far away: a thread watching for it would stay busy.
            let relayer = Arc::new(relayer(mode, None, Duration::from_secs(60)));
            let (client, mut client_end) = client_pair(&relayer);
            let (target, mut target_end) = pair();
            let (done, outcome) = mpsc::channel();
            let running = Arc::clone(&relayer);
            thread::spawn(move || done.send(running.relay(client, target, Arc::default())));
            target_end.shutdown(Shutdown::Write).unwrap();
            assert_eq!(client_end.read(&mut [0; 8]).unwrap(), 0, "{mode:?}: the target's FIN reaches the client");
            let deadline = Instant::now() + Duration::from_secs(5);
            while relayer.threads.load().busy != 0 {
                assert!(Instant::now() < deadline, "{mode:?}: a relay thread still watches the client");
                thread::sleep(Duration::from_millis(5));
            }
            // The worker's direction goes on alone, and ends with the client's FIN.
            client_end.write_all(b"late").unwrap();
            client_end.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            target_end.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"late", "{mode:?}");
            let outcome = outcome.recv_timeout(GIVE_UP).unwrap();
            assert!(matches!(outcome.end, RelayEnd::Closed), "{mode:?}: {}", outcome.end);
            assert_eq!((outcome.up, outcome.down), (4, 0), "{mode:?}");
        }
    }

    #[test]
    fn a_client_that_stops_reading_after_its_fin_ends_as_a_half_close_timeout() {
        for mode in modes() {
            let (client, target, outcome) = relay(relayer(mode, None, Duration::from_millis(200)));
            client.shutdown(Shutdown::Write).unwrap();
            thread::spawn(move || stream_into(target));
            let end = outcome.recv_timeout(GIVE_UP).unwrap().end;
            assert!(
                matches!(end, RelayEnd::HalfCloseTimeout { closed: Side::Client, stall: Stall::NotReading, .. }),
                "{mode:?}: {end}"
            );
        }
    }

    #[test]
    fn our_own_cut_is_reported_as_the_limit_never_as_a_peer_error() {
        for mode in modes() {
            // The client never reads while the target streams: the write toward it stalls,
            // and the read the other way then sees our own shutdown.
            let idle = Duration::from_millis(200);
            let (_client, target, outcome) = relay(relayer(mode, Some(idle), Duration::from_secs(60)));
            thread::spawn(move || stream_into(target));
            let end = outcome.recv_timeout(GIVE_UP).unwrap().end;
            assert!(matches!(end, RelayEnd::IdleTimeout(limit) if limit == idle), "{mode:?}: {end}");

            // A probe's worth exactly, then silence: the quiet read comes in the middle of
            // a burst, and must be judged like any other.
            let (mut client, mut target, outcome) = relay(relayer(mode, Some(idle), Duration::from_secs(60)));
            client.write_all(&[7; PROBE_SIZE]).unwrap();
            target.read_exact(&mut [0; PROBE_SIZE]).unwrap();
            let end = outcome.recv_timeout(GIVE_UP).unwrap().end;
            assert!(matches!(end, RelayEnd::IdleTimeout(limit) if limit == idle), "{mode:?}: {end}");
        }
    }

    #[test]
    fn an_idle_direction_holds_no_buffer_or_pipe_after_a_read_that_filled_one() {
        let spare = |relayer: &Relayer| {
            #[cfg(target_os = "linux")]
            if let Some(pipes) = relayer.pipes.as_ref() {
                return pipes.spare.lock().unwrap().len();
            }
            relayer.buffers.spare.lock().unwrap().len()
        };
        let carry = |client_end: &TcpStream, target_end: &mut TcpStream, len: usize| {
            (&*client_end).write_all(&vec![7; len]).unwrap();
            target_end.read_exact(&mut vec![0; len]).unwrap();
        };
        let spare_within = |relayer: &Relayer, limit: Duration| {
            let deadline = Instant::now() + limit;
            while spare(relayer) == 0 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            spare(relayer)
        };
        for mode in modes() {
            // Exactly the probe, then exactly the probe and one whole buffer (or pipe).
            for len in [PROBE_SIZE, PROBE_SIZE + 64 * 1024] {
                let relayer = Arc::new(relayer(mode, None, GIVE_UP));
                let (client, client_end) = client_pair(&relayer);
                let (target, mut target_end) = pair();
                let running = Arc::clone(&relayer);
                thread::spawn(move || running.relay(client, target, Arc::default()));
                // A burst that ends in a short read puts one in the pool.
                carry(&client_end, &mut target_end, PROBE_SIZE + 100);
                assert_eq!(spare_within(&relayer, GIVE_UP), 1, "{mode:?}: the first burst gave it back");
                carry(&client_end, &mut target_end, len);
                // Time to take it again, which a direction that waits holding one does at once.
                thread::sleep(Duration::from_millis(200));
                let spare = spare_within(&relayer, Duration::from_secs(2));
                assert_eq!(spare, 1, "{mode:?} after {len} bytes: the idle direction holds one");
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_worker_whose_client_waits_gives_back_the_stack_its_handshake_touched() {
        use crate::net::stack::{self, probe};
        let relayer = Arc::new(relayer(RelayMode::Copy, None, GIVE_UP));
        let (client, mut client_end) = client_pair(&relayer);
        let (target, mut target_end) = pair();
        let (stack_tx, stack_rx) = mpsc::channel();
        let worker = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                stack::remember_this_thread();
                let (bottom, frame) = (probe::bottom(), probe::frame());
                // A handshake that went deep (a name lookup does), far below the relay's frames.
                probe::go_deep();
                let below = frame - 16 * 1024;
                stack_tx.send((bottom, below, probe::resident_kib(bottom, below))).unwrap();
                relayer.relay(client, target, Arc::default())
            })
            .unwrap();
        let (bottom, below, deep) = stack_rx.recv().unwrap();
        assert!(deep >= 40, "the deep call left {deep} KiB resident");
        let deadline = Instant::now() + GIVE_UP;
        while probe::resident_kib(bottom, below) > 4 {
            assert!(Instant::now() < deadline, "an idle relay kept its handshake's stack pages");
            thread::sleep(Duration::from_millis(20));
        }
        // The relay goes on as before, both ways.
        client_end.write_all(b"ping").unwrap();
        let mut got = [0; 4];
        target_end.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        target_end.write_all(b"pong").unwrap();
        client_end.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
        drop((client_end, target_end));
        let outcome = worker.join().unwrap();
        assert!(matches!(outcome.end, RelayEnd::Closed), "{}", outcome.end);
        assert_eq!((outcome.up, outcome.down), (4, 4));
    }

    #[test]
    fn each_end_is_one_line_naming_the_limit_or_the_side() {
        let limit = Duration::from_secs(60);
        let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
        let table = [
            (RelayEnd::Closed, "closed"),
            (RelayEnd::IdleTimeout(Duration::from_millis(1500)), "idle timeout: no byte either way for 1.5s"),
            (
                RelayEnd::HalfCloseTimeout { closed: Side::Client, stall: Stall::Silent, limit },
                "half-close timeout: the target sent nothing for 60s after the client's FIN",
            ),
            (
                RelayEnd::HalfCloseTimeout { closed: Side::Target, stall: Stall::Silent, limit },
                "half-close timeout: the client sent nothing for 60s after the target's FIN",
            ),
            (
                RelayEnd::HalfCloseTimeout { closed: Side::Client, stall: Stall::NotReading, limit },
                "half-close timeout: the client read nothing for 60s after its FIN",
            ),
            (RelayEnd::Failed(Side::Target, reset()), "target error: connection reset"),
            (RelayEnd::Failed(Side::Client, reset()), "client error: connection reset"),
            (RelayEnd::NoThread, "refused: no relay thread free"),
        ];
        for (end, want) in table {
            assert_eq!(end.to_string(), want);
        }
    }
}
