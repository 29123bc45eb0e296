//! Waiting with poll(2), WSAPoll on Windows: until a listener has a connection to accept or
//! a stream has something to read, whichever comes first (and, on Windows, until a stream
//! has room to write); or until one of several non-blocking connects has ended. std and
//! socket2 wrap neither call, and sleeping between looks instead is only as fine as the
//! system's timer tick: 1 ms on Linux, about 15.6 ms by default on Windows.
//!
//! One of the modules allowed unsafe code: the two calls have no safe wrapper.
#![allow(unsafe_code)] // poll and WSAPoll have no safe wrapper in std or socket2

use socket2::Socket;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// What a wait is for: a listener's next connection, or a stream's next bytes.
#[derive(Clone, Copy)]
pub(crate) enum Watched<'a> {
    Listener(&'a TcpListener),
    Stream(&'a TcpStream),
}

/// Blocks until `watched` has a connection waiting or something to read, `stream` (if
/// given) has data, a close or an error to read, or `timeout` passes. An interrupted wait
/// returns early too: the caller looks at both sockets and waits again.
pub(crate) fn wait_readable(watched: Watched<'_>, stream: Option<&TcpStream>, timeout: Duration) -> io::Result<()> {
    sys::poll(watched, stream, sys::READABLE, millis(timeout)).map(drop)
}

/// Whether `stream` has bytes, a close or an error to read within `timeout` (zero: now).
/// An interrupted wait says no; the caller looks again.
pub(crate) fn readable_within(stream: &TcpStream, timeout: Duration) -> io::Result<bool> {
    sys::poll(Watched::Stream(stream), None, sys::READABLE, millis(timeout))
}

/// Whether `stream` has room to write (or an error to report) within `timeout`.
#[cfg(windows)]
pub(crate) fn writable_within(stream: &TcpStream, timeout: Duration) -> io::Result<bool> {
    sys::poll(Watched::Stream(stream), None, sys::WRITABLE, millis(timeout))
}

/// How a non-blocking connect ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Connect {
    Connected,
    /// Refused, unreachable, or otherwise over; the socket's pending error says why.
    Failed,
}

/// Connects watched at once without allocating: a race rarely runs more.
const ON_STACK: usize = 8;

/// Blocks until one of `connecting` (each with a non-blocking connect under way on the
/// socket `socket` gives for it) has connected or failed, or `timeout` passes. Returns
/// the first that connected, else the first that failed; `None` if the wait ended with
/// every connect still under way (the timeout, or a signal).
pub(crate) fn wait_connects<T>(
    connecting: &[T],
    socket: impl Fn(&T) -> &Socket,
    timeout: Duration,
) -> io::Result<Option<(usize, Connect)>> {
    let mut on_stack = [sys::UNWATCHED; ON_STACK];
    let mut on_heap = Vec::new();
    let fds = if connecting.len() <= ON_STACK {
        &mut on_stack[..connecting.len()]
    } else {
        on_heap.resize(connecting.len(), sys::UNWATCHED);
        &mut on_heap[..]
    };
    for (fd, item) in fds.iter_mut().zip(connecting) {
        *fd = sys::watch_connect(socket(item));
    }
    sys::poll_all(fds, millis(timeout))?;
    let first = |wanted| fds.iter().position(|fd| sys::connect_ended(fd) == Some(wanted)).map(|i| (i, wanted));
    Ok(first(Connect::Connected).or_else(|| first(Connect::Failed)))
}

/// Rounded up, so a wait of less than a millisecond is not a look without waiting.
fn millis(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
}

#[cfg(unix)]
mod sys {
    use super::{Connect, Watched};
    use socket2::Socket;
    use std::io;
    use std::net::TcpStream;
    use std::os::fd::AsRawFd;

    pub(super) const READABLE: i16 = libc::POLLIN;

    /// Waits for `events` on `watched`, or for input on `stream`; whether anything is ready.
    pub(super) fn poll(watched: Watched<'_>, stream: Option<&TcpStream>, events: i16, millis: i32) -> io::Result<bool> {
        let watch = |fd, events| libc::pollfd { fd, events, revents: 0 };
        let first = match watched {
            Watched::Listener(listener) => listener.as_raw_fd(),
            Watched::Stream(stream) => stream.as_raw_fd(),
        };
        let mut fds = [watch(first, events), watch(stream.map_or(-1, AsRawFd::as_raw_fd), READABLE)];
        let count = if stream.is_some() { 2 } else { 1 };
        poll_all(&mut fds[..count], millis)
    }

    pub(super) type PollFd = libc::pollfd;

    pub(super) const UNWATCHED: PollFd = libc::pollfd { fd: -1, events: 0, revents: 0 };

    pub(super) fn watch_connect(socket: &Socket) -> PollFd {
        libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLOUT, revents: 0 }
    }

    pub(super) fn connect_ended(fd: &PollFd) -> Option<Connect> {
        match fd.revents {
            r if r & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 => Some(Connect::Failed),
            r if r & libc::POLLOUT != 0 => Some(Connect::Connected),
            _ => None,
        }
    }

    /// Whether anything is ready; an interrupted wait says no.
    pub(super) fn poll_all(fds: &mut [PollFd], millis: i32) -> io::Result<bool> {
        let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` is a live slice of `count` initialised pollfd entries, which poll
        // only reads and writes `revents` of; the descriptors are borrowed, so open.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), count, millis) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(ready > 0)
    }
}

#[cfg(windows)]
mod sys {
    use super::{Connect, Watched};
    use socket2::Socket;
    use std::io;
    use std::net::TcpStream;
    use std::os::windows::io::AsRawSocket;

    /// WSAPOLLFD from winsock2.h.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub(super) struct WsaPollFd {
        fd: usize,
        events: i16,
        revents: i16,
    }

    /// Normal data to read, or a connection to accept; the only input event WSAPoll takes
    /// for these sockets (it refuses POLLPRI).
    pub(super) const READABLE: i16 = 0x0100; // POLLRDNORM
    /// Room to write normal data; for a connecting socket, connected.
    pub(super) const WRITABLE: i16 = 0x0010; // POLLWRNORM
    const POLLERR: i16 = 0x0001;
    const POLLHUP: i16 = 0x0002;
    const POLLNVAL: i16 = 0x0004;

    #[link(name = "ws2_32")]
    unsafe extern "system" {
        fn WSAPoll(fds: *mut WsaPollFd, count: u32, timeout: i32) -> i32;
    }

    /// Waits for `events` on `watched`, or for input on `stream`; whether anything is ready.
    pub(super) fn poll(watched: Watched<'_>, stream: Option<&TcpStream>, events: i16, millis: i32) -> io::Result<bool> {
        let watch = |socket, events| WsaPollFd { fd: socket as usize, events, revents: 0 };
        let first = match watched {
            Watched::Listener(listener) => listener.as_raw_socket(),
            Watched::Stream(stream) => stream.as_raw_socket(),
        };
        let mut fds = [watch(first, events), watch(stream.map_or(0, AsRawSocket::as_raw_socket), READABLE)];
        let count = if stream.is_some() { 2 } else { 1 };
        poll_all(&mut fds[..count], millis)
    }

    pub(super) type PollFd = WsaPollFd;

    pub(super) const UNWATCHED: PollFd = WsaPollFd { fd: usize::MAX, events: 0, revents: 0 };

    pub(super) fn watch_connect(socket: &Socket) -> PollFd {
        WsaPollFd { fd: socket.as_raw_socket() as usize, events: WRITABLE, revents: 0 }
    }

    /// Windows before 10 2004 does not report a refused connect to WSAPoll at all; such an
    /// attempt then stays under way until the race's deadline.
    pub(super) fn connect_ended(fd: &PollFd) -> Option<Connect> {
        match fd.revents {
            r if r & (POLLERR | POLLHUP | POLLNVAL) != 0 => Some(Connect::Failed),
            r if r & WRITABLE != 0 => Some(Connect::Connected),
            _ => None,
        }
    }

    /// Whether anything is ready.
    pub(super) fn poll_all(fds: &mut [PollFd], millis: i32) -> io::Result<bool> {
        let count = u32::try_from(fds.len()).unwrap_or(u32::MAX);
        // SAFETY: `fds` is a live slice of `count` initialised WSAPOLLFD entries, which
        // WSAPoll only reads and writes `revents` of; the sockets are borrowed, so open.
        let ready = unsafe { WSAPoll(fds.as_mut_ptr(), count, millis) };
        if ready < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ready > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    /// A listener with nothing waiting, and both ends of a connection.
    fn sockets() -> (TcpListener, TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        (listener, ours, theirs)
    }

    /// Waits up to 10 s and says how long it took.
    fn waited(listener: &TcpListener, stream: Option<&TcpStream>) -> Duration {
        let started = Instant::now();
        wait_readable(Watched::Listener(listener), stream, Duration::from_secs(10)).unwrap();
        started.elapsed()
    }

    #[test]
    fn nothing_to_read_waits_out_the_timeout() {
        let (listener, ours, _theirs) = sockets();
        let started = Instant::now();
        wait_readable(Watched::Listener(&listener), Some(&ours), Duration::from_millis(50)).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(45), "{:?}", started.elapsed());
    }

    #[test]
    fn a_stream_is_readable_once_data_or_a_close_is_waiting() {
        let (_listener, mut ours, mut theirs) = sockets();
        assert!(!readable_within(&ours, Duration::ZERO).unwrap(), "nothing yet");
        assert!(!readable_within(&ours, Duration::from_millis(20)).unwrap(), "nothing within the wait");
        theirs.write_all(b"x").unwrap();
        assert!(readable_within(&ours, Duration::from_secs(10)).unwrap(), "data");
        ours.read_exact(&mut [0u8; 1]).unwrap();
        drop(theirs);
        assert!(readable_within(&ours, Duration::from_secs(10)).unwrap(), "a close");
    }

    #[test]
    fn a_connect_that_ends_is_reported_and_a_connected_one_first() {
        use socket2::{Domain, Type};
        let start = |addr: std::net::SocketAddr| {
            let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            socket.set_nonblocking(true).unwrap();
            let _ = socket.connect(&addr.into());
            socket
        };
        let until_ended = |sockets: &[&Socket]| {
            let started = Instant::now();
            loop {
                if let Some(ended) = wait_connects(sockets, |s| s, Duration::from_secs(5)).unwrap() {
                    return ended;
                }
                assert!(started.elapsed() < Duration::from_secs(10), "no connect ended");
            }
        };
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let refused = start(closed);
        assert_eq!(until_ended(&[&refused]), (0, Connect::Failed));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = start(listener.local_addr().unwrap());
        // Both have ended (loopback answers at once): the connected one is reported.
        assert_eq!(until_ended(&[&good]), (0, Connect::Connected));
        assert_eq!(until_ended(&[&refused, &good]), (1, Connect::Connected));
    }

    #[test]
    fn a_connection_data_or_a_close_ends_the_wait_at_once() {
        let (listener, mut ours, mut theirs) = sockets();
        let _waiting = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(waited(&listener, None) < Duration::from_secs(5), "a connection to accept");

        let (quiet, _, _) = sockets();
        theirs.write_all(b"x").unwrap();
        assert!(waited(&quiet, Some(&ours)) < Duration::from_secs(5), "data to read");
        ours.read_exact(&mut [0u8; 1]).unwrap();
        drop(theirs);
        assert!(waited(&quiet, Some(&ours)) < Duration::from_secs(5), "a close to read");
    }
}
