//! Waiting with poll(2), WSAPoll on Windows: until a listener has a connection to accept or
//! a stream has something to read, whichever comes first; or until one of several
//! non-blocking connects has ended. std and socket2 wrap neither call, and sleeping between
//! looks instead is only as fine as the system's timer tick: 1 ms on Linux, about 15.6 ms
//! by default on Windows.
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
    sys::poll(watched, stream, millis(timeout))
}

/// Where a non-blocking connect stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Connect {
    Pending,
    Connected,
    /// Refused, unreachable, or otherwise over; the socket's pending error says why.
    Failed,
}

/// Blocks until at least one of `connecting` (sockets whose non-blocking connect is under
/// way) has connected or failed, or `timeout` passes; says where each stands, in order.
/// An interrupted wait returns early, with every connect pending.
pub(crate) fn wait_connects(connecting: &[&Socket], timeout: Duration) -> io::Result<Vec<Connect>> {
    sys::poll_connects(connecting, millis(timeout))
}

/// A timeout in poll's milliseconds, rounded up so that a wait of less than a millisecond
/// is not a look without waiting.
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

    pub(super) fn poll(watched: Watched<'_>, stream: Option<&TcpStream>, millis: i32) -> io::Result<()> {
        let watch = |fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let first = match watched {
            Watched::Listener(listener) => listener.as_raw_fd(),
            Watched::Stream(stream) => stream.as_raw_fd(),
        };
        let mut fds = [watch(first), watch(stream.map_or(-1, AsRawFd::as_raw_fd))];
        let count = if stream.is_some() { 2 } else { 1 };
        // SAFETY: `fds` is a live array of `count` initialised pollfd entries, which poll
        // only reads and writes `revents` of; the descriptors are borrowed, so open.
        if unsafe { libc::poll(fds.as_mut_ptr(), count, millis) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    pub(super) fn poll_connects(sockets: &[&Socket], millis: i32) -> io::Result<Vec<Connect>> {
        let mut fds: Vec<_> =
            sockets.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLOUT, revents: 0 }).collect();
        let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` is a live array of `count` initialised pollfd entries, which poll
        // only reads and writes `revents` of; the descriptors are borrowed, so open.
        if unsafe { libc::poll(fds.as_mut_ptr(), count, millis) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(fds
            .iter()
            .map(|fd| match fd.revents {
                r if r & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 => Connect::Failed,
                r if r & libc::POLLOUT != 0 => Connect::Connected,
                _ => Connect::Pending,
            })
            .collect())
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
    struct WsaPollFd {
        fd: usize,
        events: i16,
        revents: i16,
    }

    /// Normal data to read, or a connection to accept; the only input event WSAPoll takes
    /// for these sockets (it refuses POLLPRI).
    const POLLRDNORM: i16 = 0x0100;
    /// Writable: for a connecting socket, connected.
    const POLLWRNORM: i16 = 0x0010;
    const POLLERR: i16 = 0x0001;
    const POLLHUP: i16 = 0x0002;
    const POLLNVAL: i16 = 0x0004;

    #[link(name = "ws2_32")]
    unsafe extern "system" {
        fn WSAPoll(fds: *mut WsaPollFd, count: u32, timeout: i32) -> i32;
    }

    pub(super) fn poll(watched: Watched<'_>, stream: Option<&TcpStream>, millis: i32) -> io::Result<()> {
        let watch = |socket| WsaPollFd { fd: socket as usize, events: POLLRDNORM, revents: 0 };
        let first = match watched {
            Watched::Listener(listener) => listener.as_raw_socket(),
            Watched::Stream(stream) => stream.as_raw_socket(),
        };
        let mut fds = [watch(first), watch(stream.map_or(0, AsRawSocket::as_raw_socket))];
        let count = if stream.is_some() { 2 } else { 1 };
        // SAFETY: `fds` is a live array of `count` initialised WSAPOLLFD entries, which
        // WSAPoll only reads and writes `revents` of; the sockets are borrowed, so open.
        if unsafe { WSAPoll(fds.as_mut_ptr(), count, millis) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Windows before 10 2004 does not report a refused connect to WSAPoll at all; such an
    /// attempt then stays pending until the race's deadline.
    pub(super) fn poll_connects(sockets: &[&Socket], millis: i32) -> io::Result<Vec<Connect>> {
        let mut fds: Vec<_> = sockets
            .iter()
            .map(|s| WsaPollFd { fd: s.as_raw_socket() as usize, events: POLLWRNORM, revents: 0 })
            .collect();
        let count = u32::try_from(fds.len()).unwrap_or(u32::MAX);
        // SAFETY: `fds` is a live array of `count` initialised WSAPOLLFD entries, which
        // WSAPoll only reads and writes `revents` of; the sockets are borrowed, so open.
        if unsafe { WSAPoll(fds.as_mut_ptr(), count, millis) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fds
            .iter()
            .map(|fd| match fd.revents {
                r if r & (POLLERR | POLLHUP | POLLNVAL) != 0 => Connect::Failed,
                r if r & POLLWRNORM != 0 => Connect::Connected,
                _ => Connect::Pending,
            })
            .collect())
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
