//! The Linux system calls behind the zero-copy relay: a pipe, and splice(2) between a
//! socket and that pipe. One of the modules allowed unsafe code (with `stack`, `descriptors` and
//! `udp_batch`); everything here is a thin wrapper that turns a raw return value into
//! `io::Result`.
#![allow(unsafe_code)] // splice, pipe2 and fcntl have no safe wrapper in std or socket2

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A pipe the relay moves bytes through: socket → `write` end, `read` end → socket.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// Opens a pipe (close-on-exec) and asks for `capacity` bytes of room; the kernel may
    /// round it up or refuse a larger size, which only costs more system calls.
    pub(crate) fn new(capacity: usize) -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid, writable array of two c_ints, as pipe2 requires.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let size = capacity.min(i32::MAX as usize) as libc::c_int;
        // SAFETY: F_SETPIPE_SZ and F_GETPIPE_SZ take an int (or nothing) and touch no
        // memory of ours; they return the size the pipe now has, or -1.
        let mut granted = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
        if granted < 0 {
            // SAFETY: as above.
            granted = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        }
        let capacity = usize::try_from(granted).map_err(|_| io::Error::last_os_error())?;
        Ok(Pipe { read, write, capacity })
    }

    /// Bytes the pipe holds when full.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Moves up to `len` bytes from the socket `src` into the pipe. Blocks like a read on
    /// `src` (honouring its read timeout); `Ok(0)` is end of stream.
    pub(crate) fn fill_from(&self, src: &impl AsRawFd, len: usize) -> io::Result<usize> {
        splice(src.as_raw_fd(), self.write.as_raw_fd(), len)
    }

    /// Moves up to `len` bytes out of the pipe into the socket `dst`; blocks like a write.
    pub(crate) fn drain_to(&self, dst: &impl AsRawFd, len: usize) -> io::Result<usize> {
        splice(self.read.as_raw_fd(), dst.as_raw_fd(), len)
    }
}

fn splice(from: libc::c_int, to: libc::c_int, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (borrowed from live
    // owners), and null offsets are what splice requires for sockets and pipes.
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, libc::SPLICE_F_MOVE) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn moves_bytes_socket_to_pipe_to_socket_and_reports_eof() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (src, _) = listener.accept().unwrap();
        let listener2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = TcpStream::connect(listener2.local_addr().unwrap()).unwrap();
        let (mut reader, _) = listener2.accept().unwrap();

        let pipe = Pipe::new(64 * 1024).unwrap();
        writer.write_all(b"through the pipe").unwrap();
        let n = pipe.fill_from(&src, 64 * 1024).unwrap();
        assert_eq!(n, 16);
        assert_eq!(pipe.drain_to(&dst, n).unwrap(), 16);
        let mut got = [0u8; 16];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"through the pipe");

        drop(writer);
        assert_eq!(pipe.fill_from(&src, 64 * 1024).unwrap(), 0, "FIN reads as 0");
    }
}
