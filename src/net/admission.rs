//! Who gets a worker when clients want more than there are: the admission books every
//! accepted TCP client passes through before it is handed to the worker pool.
//!
//! Two limits apply to live sessions (queued or running): the server's, which is the
//! number of workers, and each client address's share of it. A silent client costs
//! nothing to open, so a limit alone would let a few thousand of them hold every place
//! for the whole handshake timeout. What makes the limits safe is that a client still
//! owing us its request (greeting, login or request not yet complete) is *waiting*, and
//! a waiting client can be reclaimed: when a newcomer finds its address's share, or the
//! workers, all taken, the oldest waiting client (of that address, or of all) is shut
//! down to make room. Its worker, blocked reading from it, wakes at once and is free.
//! A client is refused only when every place is held by sessions that are past their
//! request (connecting, relaying): those are doing what we are for.
//!
//! The books are kept by the accept loops, so that admission costs the workers no lock: a
//! worker whose client has sent its request flips an atomic, and one whose session ended
//! sends a note down a channel that the next admission settles first. The one exception is
//! a connection from a load balancer (`--proxy-protocol`): it is admitted with no address,
//! since the balancer's is not its client's, and its worker charges the client's address
//! once the PROXY header has named it ([`Seat::attribute`]).

use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long the accept loop waits for reclaimed sessions to finish, when as many are
/// unfinished as there are places, before it refuses the newcomer. Workers finish a
/// reclaimed session in microseconds; a burst of reclaims only has to be caught up with.
const RECLAIMED_CATCH_UP: Duration = Duration::from_millis(100);

/// The admission books of one server.
pub(crate) struct Admission {
    limits: Limits,
    /// Kept by the accept loops, so the lock is theirs alone: workers never take it.
    books: Mutex<Books>,
    /// Sessions that ended, for the books: sent by workers, settled at the next admission.
    ended_tx: Sender<Ended>,
    ended: Receiver<Ended>,
}

/// A session that ended: what its [`Seat`] tells the books.
struct Ended {
    key: u64,
    address: Option<IpAddr>,
}

/// How many live sessions are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Sessions that get a worker at once.
    pub workers: usize,
    /// Sessions that may wait for a worker when nothing can be reclaimed.
    pub queue: usize,
    /// Live sessions of one client address.
    pub per_address: usize,
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address holds its whole share, and none of those sessions is waiting.
    AddressLimit,
    /// Every worker and queue place is held by a session past its request.
    Full,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::AddressLimit => write!(f, "its address has all the sessions it may have"),
            Refusal::Full => write!(f, "every worker is serving a session past its request"),
        }
    }
}

#[derive(Default)]
struct Books {
    next_key: u64,
    /// Live sessions, not counting reclaimed ones on their way out.
    live: usize,
    per_address: HashMap<IpAddr, Share>,
    /// Clients registered as waiting, by age (keys grow with time). An entry whose client
    /// has since left is dropped when a reclaim comes across it or its session ends.
    waiting: BTreeMap<u64, Entry>,
    /// Reclaimed sessions whose worker has not finished them yet.
    reclaimed: HashSet<u64>,
}

#[derive(Default)]
struct Share {
    live: usize,
    waiting: BTreeSet<u64>,
}

struct Entry {
    /// `None` until a load balancer's connection names its client.
    address: Option<IpAddr>,
    slot: Arc<Slot>,
}

/// A registered client, shared by the books and its [`Waiting`]. Its worker leaves without
/// the books' lock: a compare-and-swap on `standing` settles the race with a reclaim, and
/// whichever side wins owns the second handle (closing it, or shutting the socket down).
struct Slot {
    standing: AtomicU8,
    /// A second handle on the client's socket; taken by the side that wins the race.
    handle: Mutex<Option<TcpStream>>,
}

const WAITING: u8 = 0;
const LEFT: u8 = 1;
const RECLAIMED: u8 = 2;

impl Slot {
    /// Moves the client from `WAITING` to `to`; on success returns the second handle.
    fn settle(&self, to: u8) -> Result<Option<TcpStream>, u8> {
        self.standing.compare_exchange(WAITING, to, Ordering::AcqRel, Ordering::Acquire)?;
        Ok(self.handle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take())
    }
}

/// An admitted client's places in the books.
pub(crate) struct Admitted {
    pub seat: Seat,
    /// Held while the client may be reclaimed; `None` if it never may.
    pub waiting: Option<Waiting>,
    /// How many waiting clients were reclaimed to make room for this one.
    pub reclaimed: usize,
}

/// A live session's place in the books, held until the session ends.
pub(crate) struct Seat {
    admission: Arc<Admission>,
    key: u64,
    /// The address whose share it holds; `None` for a load balancer's connection whose
    /// PROXY header has not named its client yet.
    address: Option<IpAddr>,
}

/// A client that still owes us its request: reclaimable until this is stopped or dropped.
pub(crate) struct Waiting {
    slot: Arc<Slot>,
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Self {
        let limits = Limits { workers: limits.workers.max(1), per_address: limits.per_address.max(1), ..limits };
        let (ended_tx, ended) = crossbeam_channel::unbounded();
        Admission { limits, books: Mutex::new(Books::default()), ended_tx, ended }
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        // Nothing in here panics half-way through an update, but if something did, the
        // counts are still the best we have.
        self.books.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a client from `address`, reclaiming a waiting client if that is what makes
    /// room. With `may_wait`, the client is registered as waiting (reclaimable) until its
    /// [`Waiting`] is stopped; `stream` is the client's socket, cloned for that.
    pub(crate) fn admit(
        self: &Arc<Self>,
        stream: &TcpStream,
        address: IpAddr,
        may_wait: bool,
    ) -> Result<Admitted, Refusal> {
        self.admit_as(stream, Some(address), may_wait)
    }

    /// Admits a load balancer's connection against the server's limit alone: the address
    /// that counts is its client's, which its PROXY header names later, on the worker
    /// ([`Seat::attribute`]). It waits (may be reclaimed) until then, and after if `may_wait`.
    pub(crate) fn admit_unattributed(self: &Arc<Self>, stream: &TcpStream) -> Result<Admitted, Refusal> {
        self.admit_as(stream, None, true)
    }

    fn admit_as(
        self: &Arc<Self>,
        stream: &TcpStream,
        address: Option<IpAddr>,
        may_wait: bool,
    ) -> Result<Admitted, Refusal> {
        let limits = self.limits;
        // Cloned before the lock is taken: the system call need not hold up the workers.
        // Without a second handle (out of descriptors) the client is served all the same,
        // only it cannot be reclaimed.
        let handle = if may_wait { stream.try_clone().ok() } else { None };
        let mut books = self.books();
        for ended in self.ended.try_iter() {
            books.settle(ended);
        }
        // Reclaimed sessions end as soon as a worker reaches them, and they bound how many
        // more may be reclaimed: past that, wait for workers to catch up; if they do not,
        // they are busy with work that is not ours to cut, and reclaiming more would not help.
        let catch_up = Instant::now() + RECLAIMED_CATCH_UP;
        while books.reclaimed.len() >= limits.workers + limits.queue {
            match self.ended.recv_deadline(catch_up) {
                Ok(ended) => books.settle(ended),
                Err(_) => return Err(Refusal::Full),
            }
        }
        let mut reclaimed = 0;
        if let Some(address) = address {
            reclaimed += books.make_room_in_share(address, limits.per_address)?;
        }
        if books.live >= limits.workers {
            if books.reclaim_oldest(None) {
                reclaimed += 1;
            } else if books.live >= limits.workers + limits.queue {
                return Err(Refusal::Full);
            }
        }
        let key = books.next_key;
        books.next_key += 1;
        books.live += 1;
        if let Some(address) = address {
            books.join_share(key, address, handle.is_some());
        }
        let waiting = handle.map(|handle| {
            let slot = Arc::new(Slot { standing: AtomicU8::new(WAITING), handle: Mutex::new(Some(handle)) });
            books.waiting.insert(key, Entry { address, slot: Arc::clone(&slot) });
            Waiting { slot }
        });
        Ok(Admitted { seat: Seat { admission: Arc::clone(self), key, address }, waiting, reclaimed })
    }

    /// Sessions live now (queued or running), and reclaimed ones not yet finished.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let mut books = self.books();
        for ended in self.ended.try_iter() {
            books.settle(ended);
        }
        (books.live, books.reclaimed.len())
    }
}

impl Books {
    /// Makes room in `address`'s share for one more session, reclaiming that address's
    /// oldest waiting client if the share is full; returns how many were reclaimed.
    fn make_room_in_share(&mut self, address: IpAddr, per_address: usize) -> Result<usize, Refusal> {
        let share_live = self.per_address.get(&address).map_or(0, |share| share.live);
        if share_live < per_address {
            return Ok(0);
        }
        match self.reclaim_oldest(Some(address)) {
            true => Ok(1),
            false => Err(Refusal::AddressLimit),
        }
    }

    /// Counts session `key` in `address`'s share, among its waiting clients if `waiting`.
    fn join_share(&mut self, key: u64, address: IpAddr, waiting: bool) {
        let share = self.per_address.entry(address).or_default();
        share.live += 1;
        if waiting {
            share.waiting.insert(key);
        }
    }

    /// Gives an ended session's place back (a reclaimed one gave it back when reclaimed).
    fn settle(&mut self, ended: Ended) {
        if !self.reclaimed.remove(&ended.key) {
            self.remove_waiting(ended.key);
            self.live -= 1;
            self.leave_share(ended.key, ended.address);
        }
    }

    /// Reclaims the oldest client still waiting, of `address` or of all; entries of
    /// clients that have left meanwhile are dropped on the way.
    fn reclaim_oldest(&mut self, address: Option<IpAddr>) -> bool {
        loop {
            let oldest = match address {
                Some(address) => self.per_address.get(&address).and_then(|share| share.waiting.first().copied()),
                None => self.waiting.first_key_value().map(|(&key, _)| key),
            };
            let Some(key) = oldest else { return false };
            let Some(entry) = self.remove_waiting(key) else { return false };
            if let Ok(handle) = entry.slot.settle(RECLAIMED) {
                // Ends its handshake at once: the worker blocked reading from it wakes.
                if let Some(handle) = handle {
                    let _ = handle.shutdown(Shutdown::Both);
                }
                self.reclaimed.insert(key);
                self.live -= 1;
                self.leave_share(key, entry.address);
                return true;
            }
        }
    }

    fn remove_waiting(&mut self, key: u64) -> Option<Entry> {
        let entry = self.waiting.remove(&key)?;
        if let Some(share) = entry.address.and_then(|address| self.per_address.get_mut(&address)) {
            share.waiting.remove(&key);
        }
        Some(entry)
    }

    fn leave_share(&mut self, key: u64, address: Option<IpAddr>) {
        let Some(address) = address else { return };
        if let Some(share) = self.per_address.get_mut(&address) {
            share.live -= 1;
            share.waiting.remove(&key);
            if share.live == 0 {
                self.per_address.remove(&address);
            }
        }
    }
}

impl Seat {
    /// Charges this session, admitted with no address, to `address` (the client a load
    /// balancer's PROXY header named), as admission would have at accept: that address's
    /// oldest waiting client may be reclaimed to make room (the count is returned), or
    /// this session is refused. One that was reclaimed meanwhile is charged nothing.
    pub(crate) fn attribute(&mut self, address: IpAddr) -> Result<usize, Refusal> {
        let admission = Arc::clone(&self.admission);
        let mut books = admission.books();
        for ended in admission.ended.try_iter() {
            books.settle(ended);
        }
        if self.address.is_some() || books.reclaimed.contains(&self.key) {
            return Ok(0);
        }
        let reclaimed = books.make_room_in_share(address, admission.limits.per_address)?;
        let still_waiting = match books.waiting.get_mut(&self.key) {
            Some(entry) => {
                entry.address = Some(address);
                true
            }
            None => false,
        };
        books.join_share(self.key, address, still_waiting);
        self.address = Some(address);
        Ok(reclaimed)
    }

    /// Whether this session was shut down to make room for a newer client.
    #[cfg(test)]
    fn was_reclaimed(&self) -> bool {
        let mut books = self.admission.books();
        for ended in self.admission.ended.try_iter() {
            books.settle(ended);
        }
        books.reclaimed.contains(&self.key)
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        // The admission holds the receiver as long as any seat exists.
        let _ = self.admission.ended_tx.send(Ended { key: self.key, address: self.address });
    }
}

impl Waiting {
    /// Whether this client was shut down to make room for a newer one.
    pub(crate) fn was_reclaimed(&self) -> bool {
        self.slot.standing.load(Ordering::Acquire) == RECLAIMED
    }

    /// Stops waiting, as dropping does; returns whether the client had been reclaimed first.
    pub(crate) fn stop(self) -> bool {
        self.leave()
    }

    /// Leaves the waiting clients, closing the second handle now rather than when the
    /// books next look: it must not keep the socket open past its session.
    fn leave(&self) -> bool {
        matches!(self.slot.settle(LEFT), Err(RECLAIMED))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A connected pair: what the client holds, and what the server accepted.
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, listener.accept().unwrap().0)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn assert_shut(client: &mut TcpStream) {
        client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        assert!(matches!(client.read(&mut byte), Ok(0) | Err(_)), "the reclaimed client sees its connection end");
    }

    #[test]
    fn a_newcomer_reclaims_the_oldest_waiting_client_of_its_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = Arc::new(Admission::new(Limits { workers: 8, queue: 0, per_address: 2 }));
        let (mut first_client, first) = pair(&listener);
        let (_, second) = pair(&listener);
        let Admitted { seat: seat1, waiting: waiting1, .. } = admission.admit(&first, ip("10.0.0.1"), true).unwrap();
        let _second = admission.admit(&second, ip("10.0.0.1"), true).unwrap();
        // another address is not touched by this one's share
        let (_, other) = pair(&listener);
        let _other = admission.admit(&other, ip("10.0.0.2"), true).unwrap();

        let (_, third) = pair(&listener);
        let third = admission.admit(&third, ip("10.0.0.1"), true).unwrap();
        assert_eq!(third.reclaimed, 1);
        assert!(seat1.was_reclaimed() && waiting1.unwrap().was_reclaimed());
        assert_shut(&mut first_client);
        assert_eq!(admission.counts(), (3, 1));
        drop(seat1);
        assert_eq!(admission.counts(), (3, 0), "a reclaimed seat leaves the live count once");
    }

    #[test]
    fn sessions_past_their_request_are_never_reclaimed_and_refusal_follows() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = Arc::new(Admission::new(Limits { workers: 2, queue: 1, per_address: 2 }));
        let (_, a) = pair(&listener);
        let (_, b) = pair(&listener);
        let Admitted { seat: _seat_a, waiting, .. } = admission.admit(&a, ip("10.0.0.1"), true).unwrap();
        drop(waiting); // its request is in: it is connecting or relaying now
        let _b = admission.admit(&b, ip("10.0.0.1"), false).unwrap();
        let (_, c) = pair(&listener);
        assert_eq!(admission.admit(&c, ip("10.0.0.1"), true).err(), Some(Refusal::AddressLimit));
        // the workers are taken; a place in the queue is left, then nothing
        let _queued = admission.admit(&c, ip("10.0.0.2"), false).unwrap();
        assert_eq!(admission.admit(&c, ip("10.0.0.3"), true).err(), Some(Refusal::Full));
    }

    #[test]
    fn when_the_workers_are_taken_the_oldest_waiting_client_of_any_address_goes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = Arc::new(Admission::new(Limits { workers: 3, queue: 0, per_address: 3 }));
        let mut held = Vec::new();
        for (i, address) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].into_iter().enumerate() {
            let (client, accepted) = pair(&listener);
            let Admitted { seat, waiting, .. } = admission.admit(&accepted, ip(address), true).unwrap();
            // only the oldest is still waiting, and it is the one to go
            let waiting = waiting.filter(|_| i == 0);
            held.push((client, accepted, seat, waiting));
        }
        let (_, newcomer) = pair(&listener);
        let Admitted { seat: _newcomer, .. } = admission.admit(&newcomer, ip("10.0.0.9"), true).unwrap();
        assert!(held[0].2.was_reclaimed());
        assert!(!held[1].2.was_reclaimed() && !held[2].2.was_reclaimed());
        assert_shut(&mut held[0].0);
        // the newcomer is past its request too: nothing is left to reclaim
        let (_, another) = pair(&listener);
        assert_eq!(admission.admit(&another, ip("10.0.0.10"), true).err(), Some(Refusal::Full));
    }

    #[test]
    fn a_balancers_connections_count_for_the_clients_their_headers_name() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = Arc::new(Admission::new(Limits { workers: 8, queue: 0, per_address: 1 }));
        // Three connections from one balancer: none is charged to its address.
        let (mut first_client, first) = pair(&listener);
        let (_, second) = pair(&listener);
        let (_, third) = pair(&listener);
        let Admitted { seat: mut seat1, waiting: waiting1, .. } = admission.admit_unattributed(&first).unwrap();
        let Admitted { seat: mut seat2, waiting: waiting2, .. } = admission.admit_unattributed(&second).unwrap();
        let Admitted { seat: mut seat3, .. } = admission.admit_unattributed(&third).unwrap();
        assert_eq!(admission.counts(), (3, 0));
        // Their headers name one client twice: its share holds one, so the newer one
        // reclaims the older, still waiting, as it would have at accept.
        assert_eq!(seat1.attribute(ip("192.0.2.7")), Ok(0));
        assert_eq!(seat2.attribute(ip("192.0.2.7")), Ok(1));
        assert!(seat1.was_reclaimed() && waiting1.unwrap().was_reclaimed());
        assert_shut(&mut first_client);
        // Past its request, the second cannot be reclaimed: a third for that client is refused.
        assert!(!waiting2.unwrap().stop());
        assert_eq!(seat3.attribute(ip("192.0.2.7")), Err(Refusal::AddressLimit));
        // The client's share is given back when its session ends.
        drop((seat1, seat2));
        assert_eq!(seat3.attribute(ip("192.0.2.7")), Ok(0));
        assert_eq!(admission.counts(), (1, 0));
    }
}
