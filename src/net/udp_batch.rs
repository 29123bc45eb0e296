//! Many UDP datagrams per system call: on Linux, recvmmsg(2) takes every datagram that
//! has queued up on a socket (up to a batch) in one call and sendmmsg(2) sends a batch in
//! another, where a relay would otherwise make two calls per datagram; a run of same-size
//! datagrams to one address goes down the stack as one UDP GSO message. Elsewhere a batch
//! holds one datagram and std's `recv_from`/`send_to` move it.
//!
//! One of the modules allowed unsafe code (with `splice`, `stack` and `descriptors`): the two system
//! calls have no safe wrapper in std or socket2. Everything outside sees the safe [`Batch`].
#![allow(unsafe_code)] // recvmmsg and sendmmsg have no safe wrapper in std or socket2

use crate::config::rules::Allowed;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;

/// The largest datagram IPv4 or IPv6 can deliver: every slot holds one, so none is cut.
pub(crate) const MAX_DATAGRAM: usize = 65_535;
/// The most datagrams one call moves, and so the most slots a batch grows to.
const MAX_SLOTS: usize = if cfg!(target_os = "linux") { 32 } else { 1 };
/// Receives that do not wait, after one that found datagrams, before one that sleeps.
/// Measured on a 2-CPU machine: 5 roughly doubles the benchmark's packets/s and costs
/// sparse traffic (a round trip a millisecond) about a third more CPU per datagram; 1 or
/// 2 gain less, 10 or 20 gain no more and cost more.
const LOOKS_BEFORE_SLEEP: usize = if cfg!(target_os = "linux") { 5 } else { 0 };

/// Whether a receive waits for the first datagram.
#[derive(Clone, Copy, PartialEq)]
enum Wait {
    Yes,
    No,
}

/// Slots for datagrams received in one call and sent on from where they landed.
///
/// Each slot holds `front` free bytes (room to write a header in front of the datagram,
/// without a copy) and then the largest datagram. A batch starts with one slot, doubles
/// whenever a receive fills every slot, and goes back to one slot when a receive times
/// out: an idle socket holds one datagram's worth of memory, as a one-at-a-time relay
/// would, and only a busy one holds up to `MAX_SLOTS`.
pub(crate) struct Batch {
    slots: Vec<u8>,
    front: usize,
    /// Length and source of each datagram the last receive got, by slot.
    received: Vec<(usize, SocketAddr)>,
    sys: sys::Scratch,
}

/// One datagram to send: bytes `range` of slot `slot`, to `to`. `note` is the caller's,
/// handed back with the result.
pub(crate) struct Outgoing<T> {
    pub slot: usize,
    pub range: Range<usize>,
    pub to: Toward,
    pub note: T,
}

/// Where a datagram goes. A target takes the access rules' proof, so a relay path that
/// forgets to ask them does not compile; the other two are not access decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Toward {
    /// A target the rules allowed.
    Target(Allowed<SocketAddr>),
    /// The client a relay serves, at its own address: replies go back to whoever the
    /// relay took the datagrams from.
    Client(SocketAddr),
    /// The peer a connected socket sends to (an upstream hop's relay).
    Connected,
}

impl Toward {
    /// The address a send names; none on a connected socket.
    fn address(self) -> Option<SocketAddr> {
        match self {
            Toward::Target(target) => Some(*target.get()),
            Toward::Client(client) => Some(client),
            Toward::Connected => None,
        }
    }
}

impl Batch {
    pub(crate) fn new(front: usize) -> Batch {
        Batch { slots: vec![0; front + MAX_DATAGRAM], front, received: Vec::new(), sys: sys::Scratch::default() }
    }

    /// Where each datagram starts in its slot.
    pub(crate) fn front(&self) -> usize {
        self.front
    }

    fn slot_len(&self) -> usize {
        self.front + MAX_DATAGRAM
    }

    fn capacity(&self) -> usize {
        self.slots.len() / self.slot_len()
    }

    /// Receives what `socket` holds, up to a batch: waits for the first datagram as a
    /// plain receive would (the socket's read timeout applies), takes the rest only if
    /// already queued. Returns how many arrived, see [`Batch::datagram`]: none when the
    /// receive found only the report of an earlier datagram refused ([`none_if_refused_earlier`]).
    ///
    /// While datagrams keep coming, it first looks a few times without waiting, yielding
    /// the CPU in between: falling asleep and being woken for the next datagram costs more
    /// than a few looks (measured: the relay moves about twice as many datagrams a second
    /// on a 2-CPU machine). A socket that went quiet sleeps after the looks.
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let slot_len = self.slot_len();
        let (last, capacity) = (self.received.len(), self.capacity());
        if last == capacity && capacity < MAX_SLOTS {
            // The last receive filled every slot, so more may be waiting: double them. A
            // fresh zeroed allocation, not a resize, so the kernel backs its pages only
            // once datagrams land in them.
            self.slots = vec![0; slot_len * (2 * capacity).min(MAX_SLOTS)];
        }
        let looks = if last > 0 { LOOKS_BEFORE_SLEEP } else { 0 };
        for _ in 0..looks {
            self.received.clear();
            match sys::recv(socket, &mut self.slots, slot_len, self.front, Wait::No, &mut self.sys, &mut self.received)
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                result => return none_if_refused_earlier(result),
            }
        }
        self.received.clear();
        let result = none_if_refused_earlier(sys::recv(
            socket,
            &mut self.slots,
            slot_len,
            self.front,
            Wait::Yes,
            &mut self.sys,
            &mut self.received,
        ));
        if let Err(e) = &result
            && matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
            && self.capacity() > 1
        {
            self.slots = vec![0; slot_len];
        }
        result
    }

    /// The `i`th datagram of the last receive and where it came from.
    pub(crate) fn datagram(&self, i: usize) -> (&[u8], SocketAddr) {
        let (len, from) = self.received[i];
        let start = i * self.slot_len() + self.front;
        (&self.slots[start..start + len], from)
    }

    /// The `i`th slot, front room included: the datagram is at `front()..`.
    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let slot_len = self.slot_len();
        &mut self.slots[i * slot_len..][..slot_len]
    }

    /// Sends every datagram in `out`, in order, with as few calls as the system allows,
    /// and calls `done` once for each with whether it went out. A datagram the system
    /// refuses is reported and skipped; the rest still go.
    pub(crate) fn send<T>(
        &mut self,
        socket: &UdpSocket,
        out: &[Outgoing<T>],
        mut done: impl FnMut(&Outgoing<T>, io::Result<()>),
    ) {
        let slot_len = self.slot_len();
        let mut rest = out;
        // How many datagrams at the head of `rest` go out one by one: those of a group the
        // system refused to send as one.
        let mut ungrouped = 0;
        while !rest.is_empty() {
            let batch = &rest[..rest.len().min(MAX_SLOTS)];
            match sys::send(socket, &self.slots, slot_len, batch, ungrouped, &mut self.sys) {
                Ok(sent) => {
                    batch[..sent].iter().for_each(|datagram| done(datagram, Ok(())));
                    rest = &rest[sent..];
                    ungrouped = ungrouped.saturating_sub(sent);
                }
                Err(Refused { error, .. }) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(Refused { datagrams: 1, error }) => {
                    // The error is the first unsent datagram's: it alone is lost.
                    done(&rest[0], Err(error));
                    rest = &rest[1..];
                    ungrouped = ungrouped.saturating_sub(1);
                }
                // Sent again one by one, each gets its own verdict.
                Err(Refused { datagrams, .. }) => ungrouped = datagrams,
            }
        }
    }
}

/// Windows reports an ICMP port unreachable, earned by an earlier datagram this socket
/// sent, as WSAECONNRESET on its next receive. That error carries no datagram and says
/// nothing about the socket, which works on, and any peer can cause it at will: it reads
/// as a receive that found no datagram. (Other systems report it only on connected
/// sockets, as ECONNREFUSED, and that is left to the caller.)
fn none_if_refused_earlier(received: io::Result<usize>) -> io::Result<usize> {
    match received {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(0),
        other => other,
    }
}

/// The first message of a send failed; it held `datagrams` datagrams.
struct Refused {
    datagrams: usize,
    error: io::Error,
}

#[cfg(target_os = "linux")]
mod sys {
    use super::{MAX_SLOTS, Outgoing, Refused, Wait};
    use socket2::{SockAddr, SockAddrStorage};
    use std::io;
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    /// Address buffers reused from call to call, so a batch allocates nothing.
    #[derive(Default)]
    pub(super) struct Scratch {
        sources: Vec<SockAddrStorage>,
        destinations: Vec<Option<SockAddr>>,
        /// Datagrams this long or longer are never grouped: the system refused such a
        /// group (a path with a smaller MTU). Zero means unknown.
        pub(super) refused_size: usize,
        /// The system cannot segment at all (an old kernel, a device without checksum
        /// offload).
        no_segmentation: bool,
    }

    impl Scratch {
        /// How many datagrams from `out[first]` on can go as one segmented message.
        fn group_len<T>(&self, out: &[Outgoing<T>], first: usize) -> usize {
            let size = out[first].range.len();
            if self.no_segmentation || size == 0 || (self.refused_size != 0 && size >= self.refused_size) {
                return 1;
            }
            let (mut count, mut bytes) = (1, size);
            for next in &out[first + 1..] {
                let len = next.range.len();
                if next.to != out[first].to || len > size || count == MAX_SEGMENTS || bytes + len > MAX_GROUP_BYTES {
                    break;
                }
                count += 1;
                bytes += len;
                if len < size {
                    break; // only the last segment may be shorter
                }
            }
            count
        }

        /// Remembers why a segmented message was refused, so the next ones are not tried.
        fn learn(&mut self, size: usize, error: &io::Error) {
            match error.raw_os_error() {
                Some(libc::EINVAL | libc::EMSGSIZE) => {
                    self.refused_size = if self.refused_size == 0 { size } else { self.refused_size.min(size) };
                }
                Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP) => self.no_segmentation = true,
                _ => {}
            }
        }
    }

    /// One recvmmsg(2) into up to `MAX_SLOTS` slots of `slots`, each datagram at `front`.
    pub(super) fn recv(
        socket: &UdpSocket,
        slots: &mut [u8],
        slot_len: usize,
        front: usize,
        wait: Wait,
        scratch: &mut Scratch,
        received: &mut Vec<(usize, SocketAddr)>,
    ) -> io::Result<usize> {
        let count = (slots.len() / slot_len).min(MAX_SLOTS);
        scratch.sources.resize_with(count, SockAddrStorage::zeroed);
        // SAFETY: iovec and mmsghdr are plain C structs for which all zeros (null
        // pointers, zero lengths) is a valid value.
        let (mut iovecs, mut headers): ([libc::iovec; MAX_SLOTS], [libc::mmsghdr; MAX_SLOTS]) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        for (i, slot) in slots.chunks_exact_mut(slot_len).take(count).enumerate() {
            let room = &mut slot[front..];
            iovecs[i] = libc::iovec { iov_base: room.as_mut_ptr().cast(), iov_len: room.len() };
        }
        let iovecs = iovecs.as_mut_ptr();
        for (i, (header, source)) in headers.iter_mut().zip(scratch.sources.iter_mut()).enumerate() {
            header.msg_hdr.msg_iov = iovecs.wrapping_add(i);
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_namelen = source.size_of();
            header.msg_hdr.msg_name = (source as *mut SockAddrStorage).cast();
        }
        // SAFETY: the first `count` headers point at live, exclusively borrowed memory:
        // each at one iovec (a slot's room, writable for iov_len bytes) and one address
        // buffer of msg_namelen bytes; all outlive the call. MSG_WAITFORONE makes only
        // the first datagram wait (under the socket's read timeout), MSG_DONTWAIT none; a
        // null timeout adds no other limit.
        let flags = if wait == Wait::Yes { libc::MSG_WAITFORONE } else { libc::MSG_DONTWAIT };
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                count as libc::c_uint,
                flags as _,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        for (header, source) in headers.iter().zip(scratch.sources.iter_mut()).take(got as usize) {
            let storage = std::mem::replace(source, SockAddrStorage::zeroed());
            // SAFETY: the kernel wrote a socket address of msg_namelen bytes into this
            // buffer (its family says which kind), which is what SockAddr::new requires.
            let from = unsafe { SockAddr::new(storage, header.msg_hdr.msg_namelen) }.as_socket();
            // An inet socket only hears inet sources; were one missing, the unspecified
            // address marks the datagram as from nobody the relay serves.
            let from = from.unwrap_or(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
            received.push((header.msg_len as usize, from));
        }
        Ok(got as usize)
    }

    /// One sendmmsg(2) of `out` (at most `MAX_SLOTS`); returns how many of the first went
    /// out. Each run of datagrams to one destination, of one length (the last may be
    /// shorter), goes as one message with UDP generic segmentation offload, so the stack
    /// routes and passes down one packet for the lot and splits it at the end; the first
    /// `ungrouped` go one message each.
    pub(super) fn send<T>(
        socket: &UdpSocket,
        slots: &[u8],
        slot_len: usize,
        out: &[Outgoing<T>],
        ungrouped: usize,
        scratch: &mut Scratch,
    ) -> Result<usize, Refused> {
        scratch.destinations.clear();
        scratch.destinations.extend(out.iter().map(|datagram| datagram.to.address().map(SockAddr::from)));
        // SAFETY: iovec, mmsghdr and cmsghdr are plain C structs for which all zeros (null
        // pointers, zero lengths) is a valid value.
        let (mut iovecs, mut headers, mut controls): (
            [libc::iovec; MAX_SLOTS],
            [libc::mmsghdr; MAX_SLOTS],
            [SegmentControl; MAX_SLOTS],
        ) = unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
        for (i, datagram) in out.iter().enumerate() {
            let bytes = &slots[datagram.slot * slot_len..][datagram.range.clone()];
            // sendmmsg only reads through iov_base; the pointer is mut by C's signature.
            iovecs[i] = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
        }
        let iovecs = iovecs.as_mut_ptr();
        // Datagrams per message, in order.
        let mut sizes = [0usize; MAX_SLOTS];
        let (mut messages, mut first) = (0, 0);
        while first < out.len() {
            let count = if first < ungrouped { 1 } else { scratch.group_len(out, first) };
            let header = &mut headers[messages].msg_hdr;
            header.msg_iov = iovecs.wrapping_add(first);
            header.msg_iovlen = count as _;
            if let Some(to) = &scratch.destinations[first] {
                header.msg_name = to.as_ptr().cast_mut().cast();
                header.msg_namelen = to.len();
            }
            if count > 1 {
                let control = &mut controls[messages];
                control.set(out[first].range.len() as u16);
                header.msg_control = (control as *mut SegmentControl).cast();
                header.msg_controllen = size_of::<SegmentControl>() as _;
            }
            sizes[messages] = count;
            messages += 1;
            first += count;
        }
        // SAFETY: the first `messages` headers point at live memory that outlives the
        // call: msg_iovlen iovecs each over bytes of `slots`, which the kernel only reads;
        // a destination address of msg_namelen bytes or none (a connected socket); a
        // control message of msg_controllen bytes or none.
        let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), messages as libc::c_uint, 0) };
        if sent < 0 {
            let error = io::Error::last_os_error();
            if sizes[0] > 1 {
                scratch.learn(out[0].range.len(), &error);
            }
            return Err(Refused { datagrams: sizes[0], error });
        }
        Ok(sizes[..sent as usize].iter().sum())
    }

    /// A UDP_SEGMENT control message: its header, then the segment size, padded to
    /// CMSG_SPACE(2).
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct SegmentControl {
        header: libc::cmsghdr,
        segment_size: u16,
        padding: [u8; 6],
    }

    /// UDP_SEGMENT from linux/udp.h (libc does not define it).
    const UDP_SEGMENT: libc::c_int = 103;
    /// The most segments Linux takes in one message (UDP_MAX_SEGMENTS before 6.2; 128 since).
    const MAX_SEGMENTS: usize = 64;
    /// The most payload one message may carry, with room for any IPv4 or IPv6 header.
    const MAX_GROUP_BYTES: usize = 65_000;

    impl SegmentControl {
        fn set(&mut self, segment_size: u16) {
            // cmsg_len is CMSG_LEN(2): the header and the data, without the padding.
            self.header.cmsg_len = (size_of::<libc::cmsghdr>() + size_of::<u16>()) as _;
            self.header.cmsg_level = libc::SOL_UDP;
            self.header.cmsg_type = UDP_SEGMENT;
            self.segment_size = segment_size;
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::{Outgoing, Refused, Wait};
    use std::io;
    use std::net::{SocketAddr, UdpSocket};

    #[derive(Default)]
    pub(super) struct Scratch {}

    /// One `recv_from` into the first slot; it always waits (no looks without waiting here).
    pub(super) fn recv(
        socket: &UdpSocket,
        slots: &mut [u8],
        slot_len: usize,
        front: usize,
        _: Wait,
        _: &mut Scratch,
        received: &mut Vec<(usize, SocketAddr)>,
    ) -> io::Result<usize> {
        received.push(socket.recv_from(&mut slots[front..slot_len])?);
        Ok(1)
    }

    /// One `send_to` (or `send`) of the first datagram of `out`.
    pub(super) fn send<T>(
        socket: &UdpSocket,
        slots: &[u8],
        slot_len: usize,
        out: &[Outgoing<T>],
        _ungrouped: usize,
        _: &mut Scratch,
    ) -> Result<usize, Refused> {
        let datagram = &out[0];
        let bytes = &slots[datagram.slot * slot_len..][datagram.range.clone()];
        let sent = match datagram.to.address() {
            Some(to) => socket.send_to(bytes, to),
            None => socket.send(bytes),
        };
        sent.map(|_| 1).map_err(|error| Refused { datagrams: 1, error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bound() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket
    }

    /// Receives until `count` datagrams have arrived, batch by batch; returns each one's
    /// bytes and source, in order, and how many receives it took.
    fn receive(batch: &mut Batch, socket: &UdpSocket, count: usize) -> (Vec<(Vec<u8>, SocketAddr)>, usize) {
        let (mut got, mut calls) = (Vec::new(), 0);
        while got.len() < count {
            let n = batch.recv(socket).unwrap();
            calls += 1;
            got.extend((0..n).map(|i| {
                let (bytes, from) = batch.datagram(i);
                (bytes.to_vec(), from)
            }));
        }
        (got, calls)
    }

    #[test]
    fn a_queued_burst_arrives_whole_and_in_order_with_few_receives() {
        let (socket, first, second) = (bound(), bound(), bound());
        let to = socket.local_addr().unwrap();
        let mut sent = Vec::new();
        for i in 0..60u32 {
            let sender = if i % 3 == 0 { &second } else { &first };
            // a largest IPv4 datagram among small ones: every slot holds one
            let len = if i == 40 { 65_507 } else { (i as usize * 7) % 300 };
            let bytes: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
            sender.send_to(&bytes, to).unwrap();
            sent.push((bytes, sender.local_addr().unwrap()));
        }
        let mut batch = Batch::new(7);
        let (got, calls) = receive(&mut batch, &socket, sent.len());
        assert!(got == sent, "every datagram, intact, from its own source, in order");
        if cfg!(target_os = "linux") {
            // 1 + 2 + 4 + 8 + 16 slots, then the last 29
            assert_eq!(calls, 6, "receives for 60 queued datagrams");
        }
        assert_eq!(batch.slot_mut(0).len(), 7 + MAX_DATAGRAM);
    }

    #[test]
    fn a_receive_that_times_out_gives_back_all_slots_but_one() {
        let (socket, sender) = (bound(), bound());
        let to = socket.local_addr().unwrap();
        for i in 0..40u8 {
            sender.send_to(&[i], to).unwrap();
        }
        let mut batch = Batch::new(0);
        receive(&mut batch, &socket, 40);
        socket.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let err = batch.recv(&socket).unwrap_err();
        assert!(matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{err}");
        assert_eq!(batch.capacity(), 1);
        sender.send_to(b"after", to).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(batch.recv(&socket).unwrap(), 1);
        assert_eq!(batch.datagram(0), (&b"after"[..], sender.local_addr().unwrap()));
    }

    #[test]
    fn a_send_reports_each_datagram_and_a_refused_one_does_not_stop_the_rest() {
        let (socket, first, second) = (bound(), bound(), bound());
        let sender = bound();
        sender.send_to(b"xxhello", socket.local_addr().unwrap()).unwrap();
        let mut batch = Batch::new(0);
        assert_eq!(batch.recv(&socket).unwrap(), 1);
        // an IPv6 destination on an IPv4 socket is refused by the system
        let nowhere: SocketAddr = "[::1]:9".parse().unwrap();
        let out: Vec<Outgoing<u32>> = [
            (2..7, first.local_addr().unwrap()),
            (0..7, nowhere),
            (2..4, second.local_addr().unwrap()),
            (4..7, first.local_addr().unwrap()),
        ]
        .into_iter()
        .zip(0..)
        .map(|((range, to), note)| Outgoing { slot: 0, range, to: Toward::Client(to), note })
        .collect();
        let mut results = Vec::new();
        batch.send(&sender, &out, |datagram, sent| results.push((datagram.note, sent.is_ok())));
        assert_eq!(results, [(0, true), (1, false), (2, true), (3, true)]);
        let mut buf = [0u8; 16];
        let (len, _) = first.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"hello");
        let (len, _) = first.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"llo");
        let (len, _) = second.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"he");
    }

    #[test]
    fn a_connected_socket_sends_without_a_destination() {
        let (socket, peer) = (bound(), bound());
        socket.connect(peer.local_addr().unwrap()).unwrap();
        peer.send_to(b"ping", socket.local_addr().unwrap()).unwrap();
        let mut batch = Batch::new(0);
        assert_eq!(batch.recv(&socket).unwrap(), 1);
        let out = [Outgoing { slot: 0, range: 0..4, to: Toward::Connected, note: () }];
        let mut sent = Vec::new();
        batch.send(&socket, &out, |_, result| sent.push(result.is_ok()));
        assert_eq!(sent, [true]);
        let mut buf = [0u8; 8];
        let (len, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..len], from), (&b"ping"[..], socket.local_addr().unwrap()));
    }

    /// `count` datagrams of `size` bytes (the last `last` bytes) in one received slot's
    /// worth of bytes, all to `to`.
    fn same_size_run(
        batch: &mut Batch,
        socket: &UdpSocket,
        to: SocketAddr,
        count: usize,
        size: usize,
        last: usize,
    ) -> Vec<Outgoing<usize>> {
        let sender = bound();
        let bytes: Vec<u8> = (0..size).map(|j| j as u8).collect();
        sender.send_to(&bytes, socket.local_addr().unwrap()).unwrap();
        assert_eq!(batch.recv(socket).unwrap(), 1);
        (0..count)
            .map(|i| {
                let len = if i + 1 == count { last } else { size };
                Outgoing { slot: 0, range: 0..len, to: Toward::Client(to), note: i }
            })
            .collect()
    }

    /// Receives `count` datagrams on `receiver` and checks their lengths.
    fn assert_received(receiver: &UdpSocket, lengths: impl Iterator<Item = usize>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for (i, expected) in lengths.enumerate() {
            let (len, _) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(len, expected, "datagram {i}");
            assert!(buf[..len].iter().enumerate().all(|(j, &b)| b == j as u8), "datagram {i} intact");
        }
    }

    #[test]
    fn same_size_datagrams_to_one_destination_arrive_one_by_one() {
        let (socket, receiver) = (bound(), bound());
        let mut batch = Batch::new(0);
        let out = same_size_run(&mut batch, &socket, receiver.local_addr().unwrap(), 30, 100, 40);
        let mut sent = Vec::new();
        batch.send(&socket, &out, |datagram, result| sent.push((datagram.note, result.is_ok())));
        assert_eq!(sent, (0..30).map(|i| (i, true)).collect::<Vec<_>>());
        assert_received(&receiver, (0..30).map(|i| if i == 29 { 40 } else { 100 }));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_group_the_system_will_not_segment_goes_one_by_one() {
        use std::os::fd::AsRawFd;
        let (socket, receiver) = (bound(), bound());
        // Without UDP checksums (SO_NO_CHECK) Linux refuses segmentation with EINVAL.
        let on: libc::c_int = 1;
        // SAFETY: SO_NO_CHECK takes an int; the pointer and length describe `on`.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "{}", io::Error::last_os_error());
        let mut batch = Batch::new(0);
        let out = same_size_run(&mut batch, &socket, receiver.local_addr().unwrap(), 5, 300, 300);
        let mut sent = Vec::new();
        batch.send(&socket, &out, |datagram, result| sent.push((datagram.note, result.is_ok())));
        assert_eq!(sent, [(0, true), (1, true), (2, true), (3, true), (4, true)]);
        assert_received(&receiver, [300; 5].into_iter());
        assert_eq!(batch.sys.refused_size, 300, "datagrams this long are no longer grouped");
    }
}
