//! Who gets a worker when clients want more than there are: the admission books every
//! accepted TCP client passes through before it is handed to the worker pool.
//!
//! Two limits apply to live sessions (queued or running): the server's, which is the
//! number of workers and queue places, and each client address's share of it. An address
//! is counted by its [`AddressGroup`]: an IPv4 address alone, an IPv6 address with the rest
//! of its /64, since one host commonly holds a whole /64 and could otherwise take a share
//! per address. A silent client costs nothing to open, so a limit alone would let a few
//! thousand of them hold every place for the whole handshake timeout. What makes the limits
//! safe is that a client still owing us its request (greeting, login or request not yet
//! complete) is *waiting*, and a waiting client can be reclaimed: when a newcomer finds its
//! group's share taken, the oldest waiting client of that group is shut down to make room;
//! when it finds the workers all taken, the oldest waiting client of the group that holds
//! the most waiting clients is. So a flood from a few addresses pays for itself, and a lone
//! slow client elsewhere is taken only when no group holds more waiting clients than its
//! own. Its worker, blocked reading from it, wakes at once and is free. A client is refused
//! only when every place is held by sessions that are past their request (connecting,
//! relaying): those are doing what we are for.
//!
//! A client admitted when every worker is taken waits in the queue, for at most the limit
//! on its wait ([`Limits::queue_wait`]): the [`QueueWatch`] closes it then, unless a worker
//! took it first.
//!
//! The books are kept under a lock that the accept loops (and the queue watch, when a wait
//! runs out) take, never the workers: a worker whose client has sent its request flips an
//! atomic and sends a note down a channel, as does one whose session ended, and the next
//! admission settles the notes first. The one exception is a connection from a load
//! balancer (`--proxy-protocol`): it is admitted in no client's group, since the
//! balancer's address is not its client's, and its worker moves it to the group of the
//! client its PROXY header names once it has read it ([`Seat::attribute`]).

use crossbeam_channel::{Receiver, Sender};
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How long the accept loop waits for cut-off sessions to finish, when as many are
/// unfinished as there are places, before it refuses the newcomer. Workers finish a
/// reclaimed session in microseconds; a burst of reclaims only has to be caught up with.
const RECLAIMED_CATCH_UP: Duration = Duration::from_millis(100);

/// The admission books of one server.
pub(crate) struct Admission {
    limits: Limits,
    /// Taken by the accept loops and the queue watch, and by a worker only to name the
    /// client of a load balancer's connection.
    books: Mutex<Books>,
    /// What workers tell the books (a request heard, a session ended), settled at the next admission.
    notes_tx: Sender<Note>,
    notes: Receiver<Note>,
    /// Clients put in the queue, in the order they came, for the [`QueueWatch`].
    queued_tx: Sender<Queued>,
}

/// What a worker tells the books, without their lock.
enum Note {
    /// The client's request is in: it may no longer be reclaimed.
    Left { key: u64 },
    /// The session ended: its place is free (a cut-off one gave it back when cut).
    Ended { key: u64, group: AddressGroup },
}

/// How many live sessions are allowed: the one place capacity is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Sessions that get a worker at once.
    pub workers: usize,
    /// Sessions that may wait for a worker when nothing can be reclaimed.
    pub queue: usize,
    /// Live sessions of one [`AddressGroup`].
    pub per_address: usize,
    /// How long a queued client may wait for a worker before it is closed.
    pub queue_wait: Duration,
}

impl Limits {
    /// Live sessions at most: one per worker and per queue place.
    pub(crate) fn places(&self) -> usize {
        self.workers.saturating_add(self.queue)
    }

    /// Jobs the worker pool must hold waiting: the queue's, and the sessions admission has
    /// cut off (reclaimed, or out of time in the queue) that no worker has reached yet, as
    /// many as there are places at most; each ends as soon as it is reached.
    pub(crate) fn pool_waiting(&self) -> usize {
        self.queue.saturating_add(self.places())
    }

    /// These limits cut down to `places` in all, workers first.
    pub(crate) fn within(self, places: usize) -> Limits {
        let places = places.max(1);
        let workers = self.workers.min(places);
        Limits { workers, queue: self.queue.min(places - workers), ..self }
    }
}

/// How a client's address is counted against `--max-clients-per-ip`: an IPv4 address
/// alone (an IPv4-mapped IPv6 address as that IPv4 address), an IPv6 address by its /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum AddressGroup {
    V4(Ipv4Addr),
    /// The first 64 bits: one subnet, which a single host (SLAAC, privacy addresses) holds whole.
    V6(u64),
    /// Load balancers' connections whose PROXY header has not named their client yet: they
    /// count against the server's places, and no client's share.
    Unnamed,
}

impl AddressGroup {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(ip) => AddressGroup::V4(ip),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(ip) => AddressGroup::V4(ip),
                None => AddressGroup::V6((ip.to_bits() >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for AddressGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddressGroup::V4(ip) => write!(f, "{ip}"),
            AddressGroup::V6(prefix) => write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(prefix) << 64)),
            AddressGroup::Unnamed => write!(f, "a load balancer's connections not named yet"),
        }
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address group holds its whole share, and none of those sessions is waiting.
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
    /// Live sessions, not counting cut-off ones on their way out.
    live: usize,
    per_group: HashMap<AddressGroup, Share>,
    /// Clients that may be reclaimed, by key (keys grow with time).
    waiting: HashMap<u64, Entry>,
    /// Groups holding a waiting client, by how many and then by the age of their oldest:
    /// the last is the group to reclaim from when the workers are all taken.
    crowded: BTreeSet<(usize, Reverse<u64>, AddressGroup)>,
    /// Sessions cut off (reclaimed, or out of time in the queue) whose worker has not
    /// finished them yet.
    cut: HashSet<u64>,
}

#[derive(Default)]
struct Share {
    live: usize,
    waiting: BTreeSet<u64>,
}

struct Entry {
    group: AddressGroup,
    slot: Arc<Slot>,
}

/// A client in the queue, as the [`QueueWatch`] sees it.
struct Queued {
    key: u64,
    group: AddressGroup,
    peer: SocketAddr,
    slot: Arc<Slot>,
    deadline: Instant,
}

/// A registered client (one that may be reclaimed, or waits in the queue), shared by the
/// books and its worker. The worker moves on without the books' lock: a compare-and-swap
/// on `standing` settles each race (with a reclaim, with the queue watch), and only the
/// side that cuts the client off uses the handle, to shut the socket down.
struct Slot {
    standing: AtomicU8,
    /// The client's socket, which its session owns. A weak handle, not a second
    /// descriptor (a dup and its close cost every session two system calls): it never
    /// keeps the socket open, and once the session has closed it, it reaches nothing, so a
    /// late cut can never shut down another socket that took the same descriptor.
    handle: Weak<TcpStream>,
}

/// Admitted, in the queue: no worker has taken it yet.
const QUEUED: u8 = 0;
/// On a worker, still owing its request: may be reclaimed.
const WAITING: u8 = 1;
/// No longer anything for the books to cut.
const LEFT: u8 = 2;
/// Shut down to make room for a newer client.
const RECLAIMED: u8 = 3;
/// Shut down because no worker took it within the queue wait.
const EXPIRED: u8 = 4;

impl Slot {
    fn new(standing: u8, handle: Weak<TcpStream>) -> Arc<Slot> {
        Arc::new(Slot { standing: AtomicU8::new(standing), handle })
    }

    /// Moves the client from a standing `from` accepts to `to`; on failure, returns the
    /// standing found.
    fn settle(&self, from: impl Fn(u8) -> bool, to: u8) -> Result<(), u8> {
        let mut now = self.standing.load(Ordering::Acquire);
        loop {
            if !from(now) {
                return Err(now);
            }
            match self.standing.compare_exchange(now, to, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(found) => now = found,
            }
        }
    }

    /// Shuts the client down for the books (`RECLAIMED` or `EXPIRED`), if it is still in
    /// a standing `from` accepts; its worker, blocked reading from it, wakes at once.
    fn cut(&self, from: impl Fn(u8) -> bool, to: u8) -> bool {
        if self.settle(from, to).is_err() {
            return false;
        }
        // Nothing to shut down if the session has closed the socket already.
        if let Some(stream) = self.handle.upgrade() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        true
    }
}

/// An admitted client's places in the books.
pub(crate) struct Admitted {
    pub seat: Seat,
    /// What its worker starts from.
    pub ticket: Ticket,
    /// How many waiting clients were reclaimed to make room for this one.
    pub reclaimed: usize,
}

/// A live session's place in the books, held until the session ends.
pub(crate) struct Seat {
    admission: Arc<Admission>,
    key: u64,
    group: AddressGroup,
}

/// An admitted client on its way to a worker: [`Ticket::start`] takes it off the queue.
pub(crate) struct Ticket {
    /// Its registration, if it may be reclaimed or waits in the queue.
    slot: Option<Arc<Slot>>,
    reclaimable: bool,
    admission: Arc<Admission>,
    key: u64,
}

/// The client's wait in the queue ran out before a worker took it: it has been closed and
/// counted already.
#[derive(Debug)]
pub(crate) struct Expired;

/// A client that still owes us its request: reclaimable until this is stopped or dropped.
pub(crate) struct Waiting {
    slot: Arc<Slot>,
    admission: Arc<Admission>,
    key: u64,
}

/// The clients waiting in the queue, for the thread that closes those whose wait runs out.
pub(crate) struct QueueWatch {
    admission: Weak<Admission>,
    queued: Receiver<Queued>,
}

impl Admission {
    /// The books for `limits`, and the watch over their queue, which some thread must run
    /// when the queue has places.
    pub(crate) fn new(limits: Limits) -> (Arc<Self>, QueueWatch) {
        let limits = Limits { workers: limits.workers.max(1), per_address: limits.per_address.max(1), ..limits };
        let (notes_tx, notes) = crossbeam_channel::unbounded();
        let (queued_tx, queued) = crossbeam_channel::unbounded();
        let admission = Arc::new(Admission { limits, books: Mutex::new(Books::default()), notes_tx, notes, queued_tx });
        let watch = QueueWatch { admission: Arc::downgrade(&admission), queued };
        (admission, watch)
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        // Nothing in here panics half-way through an update, but if something did, the
        // counts are still the best we have.
        self.books.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The books with every note the workers sent so far settled.
    fn settled_books(&self) -> MutexGuard<'_, Books> {
        let mut books = self.books();
        for note in self.notes.try_iter() {
            books.settle(note);
        }
        books
    }

    /// Admits a client from `peer`, reclaiming a waiting client if that is what makes
    /// room. With `may_wait`, the client is registered as waiting (reclaimable) until its
    /// [`Waiting`] is stopped; `stream` is the client's socket, held weakly for that, and for
    /// closing it if it waits in the queue too long.
    pub(crate) fn admit(
        self: &Arc<Self>,
        stream: &Arc<TcpStream>,
        peer: SocketAddr,
        may_wait: bool,
    ) -> Result<Admitted, Refusal> {
        self.admit_in(stream, peer, AddressGroup::of(peer.ip()), may_wait)
    }

    /// Admits a connection from a load balancer at `peer` against the server's places
    /// alone: the share it counts in is its client's, which its PROXY header names later,
    /// on the worker ([`Seat::attribute`]). It may be reclaimed until its request is in.
    pub(crate) fn admit_unnamed(
        self: &Arc<Self>,
        stream: &Arc<TcpStream>,
        peer: SocketAddr,
    ) -> Result<Admitted, Refusal> {
        self.admit_in(stream, peer, AddressGroup::Unnamed, true)
    }

    fn admit_in(
        self: &Arc<Self>,
        stream: &Arc<TcpStream>,
        peer: SocketAddr,
        group: AddressGroup,
        may_wait: bool,
    ) -> Result<Admitted, Refusal> {
        let limits = self.limits;
        let mut books = self.settled_books();
        // Cut-off sessions end as soon as a worker reaches them, and they bound how many
        // more may be cut: past that, wait for workers to catch up; if they do not, they
        // are busy with work that is not ours to cut, and reclaiming more would not help.
        let catch_up = Instant::now() + RECLAIMED_CATCH_UP;
        while books.cut.len() >= limits.places() {
            match self.notes.recv_deadline(catch_up) {
                Ok(note) => books.settle(note),
                Err(_) => return Err(Refusal::Full),
            }
        }
        let mut reclaimed = 0;
        if group != AddressGroup::Unnamed {
            reclaimed += books.make_room_in_share(group, limits.per_address)?;
        }
        if books.live >= limits.workers {
            if books.reclaim_oldest(None) {
                reclaimed += 1;
            } else if books.live >= limits.places() {
                return Err(Refusal::Full);
            }
        }
        // Every worker is taken: this client waits in the queue, and must be closed if its
        // wait runs out, so it is registered even if it may not be reclaimed.
        let queued = books.live >= limits.workers;
        let key = books.next_key;
        books.next_key += 1;
        books.live += 1;
        books.per_group.entry(group).or_default().live += 1;
        let slot =
            (may_wait || queued).then(|| Slot::new(if queued { QUEUED } else { WAITING }, Arc::downgrade(stream)));
        if let Some(slot) = slot.as_ref().filter(|_| may_wait) {
            books.add_waiting(key, Entry { group, slot: Arc::clone(slot) });
        }
        if let Some(slot) = slot.as_ref().filter(|_| queued) {
            let deadline = Instant::now() + limits.queue_wait;
            // Sent under the lock, so the watch sees clients in the order of their deadlines.
            let _ = self.queued_tx.send(Queued { key, group, peer, slot: Arc::clone(slot), deadline });
        }
        drop(books);
        let ticket = Ticket { slot, reclaimable: may_wait, admission: Arc::clone(self), key };
        Ok(Admitted { seat: Seat { admission: Arc::clone(self), key, group }, ticket, reclaimed })
    }

    /// Sessions live now (queued or running), and cut-off ones not yet finished.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let books = self.settled_books();
        (books.live, books.cut.len())
    }
}

impl Books {
    /// Makes room in `group`'s share for one more session, reclaiming its oldest waiting
    /// client if the share is full; returns how many were reclaimed.
    fn make_room_in_share(&mut self, group: AddressGroup, per_address: usize) -> Result<usize, Refusal> {
        let share_live = self.per_group.get(&group).map_or(0, |share| share.live);
        if share_live < per_address {
            return Ok(0);
        }
        match self.reclaim_oldest(Some(group)) {
            true => Ok(1),
            false => Err(Refusal::AddressLimit),
        }
    }

    fn settle(&mut self, note: Note) {
        match note {
            Note::Left { key } => {
                self.remove_waiting(key);
            }
            Note::Ended { key, group } => {
                if !self.cut.remove(&key) {
                    self.remove_waiting(key);
                    self.live -= 1;
                    self.leave_share(group);
                }
            }
        }
    }

    /// Reclaims the oldest waiting client of `group`, or, with `None`, of the group that
    /// holds the most waiting clients (the oldest client among such groups). Entries of
    /// clients that left meanwhile, their note still on its way, are dropped on the way.
    fn reclaim_oldest(&mut self, group: Option<AddressGroup>) -> bool {
        loop {
            let oldest = match group {
                Some(group) => self.per_group.get(&group).and_then(|share| share.waiting.first().copied()),
                None => self.crowded.last().map(|&(_, Reverse(oldest), _)| oldest),
            };
            let Some(key) = oldest else { return false };
            let Some(entry) = self.remove_waiting(key) else { return false };
            if entry.slot.cut(|standing| standing == QUEUED || standing == WAITING, RECLAIMED) {
                self.cut_off(key, entry.group);
                return true;
            }
        }
    }

    /// Gives back the place of a session admission shut down; its worker's note of its end
    /// finds it in `cut` and gives nothing back twice.
    fn cut_off(&mut self, key: u64, group: AddressGroup) {
        self.cut.insert(key);
        self.live -= 1;
        self.leave_share(group);
    }

    fn add_waiting(&mut self, key: u64, entry: Entry) {
        let group = entry.group;
        self.waiting.insert(key, entry);
        self.change_waiting(group, |waiting| {
            waiting.insert(key);
        });
    }

    fn remove_waiting(&mut self, key: u64) -> Option<Entry> {
        let entry = self.waiting.remove(&key)?;
        self.change_waiting(entry.group, |waiting| {
            waiting.remove(&key);
        });
        Some(entry)
    }

    /// Changes `group`'s waiting clients, keeping `crowded` in step.
    fn change_waiting(&mut self, group: AddressGroup, change: impl FnOnce(&mut BTreeSet<u64>)) {
        let Some(share) = self.per_group.get_mut(&group) else { return };
        if let Some(&oldest) = share.waiting.first() {
            self.crowded.remove(&(share.waiting.len(), Reverse(oldest), group));
        }
        change(&mut share.waiting);
        if let Some(&oldest) = share.waiting.first() {
            self.crowded.insert((share.waiting.len(), Reverse(oldest), group));
        }
    }

    fn leave_share(&mut self, group: AddressGroup) {
        if let Some(share) = self.per_group.get_mut(&group) {
            share.live -= 1;
            // A live session's waiting entry goes before its place does.
            if share.live == 0 && share.waiting.is_empty() {
                self.per_group.remove(&group);
            }
        }
    }
}

impl Seat {
    /// Moves this session, admitted in no client's group, to the group of `address` (the
    /// client a load balancer's PROXY header named), as admission would have placed it at
    /// accept: that group's oldest waiting client may be reclaimed to make room (the count
    /// is returned), or this session is refused. One cut off meanwhile moves nowhere.
    pub(crate) fn attribute(&mut self, address: IpAddr) -> Result<usize, Refusal> {
        let group = AddressGroup::of(address);
        let admission = Arc::clone(&self.admission);
        let mut books = admission.settled_books();
        if self.group != AddressGroup::Unnamed || books.cut.contains(&self.key) {
            return Ok(0);
        }
        let reclaimed = books.make_room_in_share(group, admission.limits.per_address)?;
        // Its waiting entry goes before its place does, as a share is dropped once empty.
        let waiting = books.remove_waiting(self.key);
        books.leave_share(self.group);
        books.per_group.entry(group).or_default().live += 1;
        if let Some(entry) = waiting {
            books.add_waiting(self.key, Entry { group, ..entry });
        }
        self.group = group;
        Ok(reclaimed)
    }

    /// The limits it was admitted under.
    pub(crate) fn limits(&self) -> Limits {
        self.admission.limits
    }

    /// Whether this session was shut down by admission (reclaimed, or out of queue time).
    #[cfg(test)]
    fn was_cut(&self) -> bool {
        self.admission.settled_books().cut.contains(&self.key)
    }
}

/// A client's socket as its session's alone. The admission books hold it only weakly, and
/// take a strong handle only for the moment they cut off a client that may still be cut
/// (reclaimed, or out of time in the queue); once its request is heard
/// (`Negotiation::heard_request`), or its worker has started a client that never waits,
/// they never will again, so the socket is never shared here.
pub(crate) fn sole(stream: Arc<TcpStream>) -> TcpStream {
    Arc::try_unwrap(stream).expect("a client the books may no longer cut holds its socket alone")
}

impl Drop for Seat {
    fn drop(&mut self) {
        // The admission holds the receiver as long as any seat exists.
        let _ = self.admission.notes_tx.send(Note::Ended { key: self.key, group: self.group });
    }
}

impl Ticket {
    /// Called by the worker that takes the client: takes it off the queue, and hands over
    /// its [`Waiting`] if it may be reclaimed. Fails if its wait in the queue ran out first.
    pub(crate) fn start(self) -> Result<Option<Waiting>, Expired> {
        let Some(slot) = self.slot else { return Ok(None) };
        let started = if self.reclaimable { WAITING } else { LEFT };
        // A client never queued, or reclaimed while it was, is served: a reclaimed one
        // finds out as it reads.
        if let Err(EXPIRED) = slot.settle(|standing| standing == QUEUED, started) {
            return Err(Expired);
        }
        Ok(self.reclaimable.then(|| Waiting { slot, admission: self.admission, key: self.key }))
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

    /// Leaves the waiting clients; the books hear of it at their next admission. Once this
    /// succeeds nothing in the books may cut the client, so its socket is its session's alone.
    fn leave(&self) -> bool {
        match self.slot.settle(|standing| standing == WAITING, LEFT) {
            Ok(_) => {
                // The admission holds the receiver as long as any waiting client exists.
                let _ = self.admission.notes_tx.send(Note::Left { key: self.key });
                false
            }
            Err(standing) => standing == RECLAIMED,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.leave();
    }
}

impl QueueWatch {
    /// Waits for the next queued client whose wait for a worker runs out before a worker
    /// takes it, closes it, and returns its address; `None` once the admission is gone.
    pub(crate) fn next_expired(&self) -> Option<SocketAddr> {
        loop {
            // Clients come in the order of their deadlines: the next due is the oldest.
            let queued = self.queued.recv().ok()?;
            let wait = queued.deadline.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            let admission = self.admission.upgrade()?;
            // Under the lock, so the client's end, if its worker is quick, is settled after.
            let mut books = admission.settled_books();
            if queued.slot.cut(|standing| standing == QUEUED, EXPIRED) {
                books.remove_waiting(queued.key);
                books.cut_off(queued.key, queued.group);
                return Some(queued.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    const NO_QUEUE_WAIT: Duration = Duration::from_secs(3600);

    fn limits(workers: usize, queue: usize, per_address: usize) -> Limits {
        Limits { workers, queue, per_address, queue_wait: NO_QUEUE_WAIT }
    }

    fn admission(limits: Limits) -> Arc<Admission> {
        Admission::new(limits).0
    }

    /// A connected pair: what the client holds, and what the server accepted, shared as
    /// the accept loop shares it with the books.
    fn pair(listener: &TcpListener) -> (TcpStream, Arc<TcpStream>) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (client, Arc::new(listener.accept().unwrap().0))
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    fn assert_shut(client: &mut TcpStream) {
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        assert!(matches!(client.read(&mut byte), Ok(0) | Err(_)), "the cut-off client sees its connection end");
    }

    /// A client admitted from `ip` that has started on a worker, still waiting (or, with
    /// `waiting` false, past its request); with what the client, the books and its worker hold.
    struct Held {
        client: TcpStream,
        seat: Seat,
        waiting: Option<Waiting>,
        /// The socket, kept open as its session keeps it.
        _accepted: Arc<TcpStream>,
    }

    fn hold(admission: &Arc<Admission>, listener: &TcpListener, ip: &str, waiting: bool) -> Held {
        let (client, accepted) = pair(listener);
        let Admitted { seat, ticket, .. } = admission.admit(&accepted, peer(ip), true).unwrap();
        let started = ticket.start().unwrap();
        Held { client, seat, waiting: started.filter(|_| waiting), _accepted: accepted }
    }

    #[test]
    fn a_newcomer_reclaims_the_oldest_waiting_client_of_its_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = admission(limits(8, 0, 2));
        let mut first = hold(&admission, &listener, "10.0.0.1", true);
        let _second = hold(&admission, &listener, "10.0.0.1", true);
        // another address is not touched by this one's share
        let _other = hold(&admission, &listener, "10.0.0.2", true);

        let (_, third) = pair(&listener);
        let third = admission.admit(&third, peer("10.0.0.1"), true).unwrap();
        assert_eq!(third.reclaimed, 1);
        assert!(first.seat.was_cut() && first.waiting.as_ref().unwrap().was_reclaimed());
        assert_shut(&mut first.client);
        assert_eq!(admission.counts(), (3, 1));
        drop(first);
        assert_eq!(admission.counts(), (3, 0), "a reclaimed seat leaves the live count once");
    }

    #[test]
    fn a_session_closes_its_socket_while_waiting_and_a_later_cut_reaches_no_other_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = admission(limits(8, 0, 1));
        let (mut client, accepted) = pair(&listener);
        let Admitted { seat: _seat, ticket, .. } = admission.admit(&accepted, peer("10.0.0.1"), true).unwrap();
        let _waiting = ticket.start().unwrap();
        // The session closes its socket while the books still count it as waiting: the
        // books keep nothing open.
        drop(accepted);
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(client.read(&mut [0; 1]).unwrap(), 0, "the client sees its session end");
        // A new connection may take the same descriptor; cutting the old client must not touch it.
        let (mut bystander, bystander_end) = pair(&listener);
        let (_, newcomer) = pair(&listener);
        let newcomer = admission.admit(&newcomer, peer("10.0.0.1"), true).unwrap();
        assert_eq!(newcomer.reclaimed, 1, "the waiting client's place is taken back all the same");
        (&*bystander_end).write_all(b"still here").unwrap();
        let mut got = [0; 10];
        bystander.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        bystander.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still here");
    }

    #[test]
    fn sessions_past_their_request_are_never_reclaimed_and_refusal_follows() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = admission(limits(2, 1, 2));
        let _a = hold(&admission, &listener, "10.0.0.1", false); // its request is in
        let (_, b) = pair(&listener);
        let _b = admission.admit(&b, peer("10.0.0.1"), false).unwrap();
        let (_, c) = pair(&listener);
        assert_eq!(admission.admit(&c, peer("10.0.0.1"), true).err(), Some(Refusal::AddressLimit));
        // the workers are taken; a place in the queue is left, then nothing
        let _queued = admission.admit(&c, peer("10.0.0.2"), false).unwrap();
        assert_eq!(admission.admit(&c, peer("10.0.0.3"), true).err(), Some(Refusal::Full));
    }

    #[test]
    fn when_the_workers_are_taken_the_oldest_waiting_client_of_any_address_goes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = admission(limits(3, 0, 3));
        // only the oldest is still waiting, and it is the one to go
        let mut held = vec![hold(&admission, &listener, "10.0.0.1", true)];
        held.push(hold(&admission, &listener, "10.0.0.2", false));
        held.push(hold(&admission, &listener, "10.0.0.3", false));
        let _newcomer = hold(&admission, &listener, "10.0.0.9", false);
        assert!(held[0].seat.was_cut());
        assert!(!held[1].seat.was_cut() && !held[2].seat.was_cut());
        assert_shut(&mut held[0].client);
        // the newcomer is past its request too: nothing is left to reclaim
        let (_, another) = pair(&listener);
        assert_eq!(admission.admit(&another, peer("10.0.0.10"), true).err(), Some(Refusal::Full));
    }

    #[test]
    fn ipv6_clients_share_by_their_64_and_mapped_ipv4_clients_as_their_ipv4_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = admission(limits(16, 0, 2));
        let _one = hold(&admission, &listener, "2001:db8:0:7::1", false);
        let _two = hold(&admission, &listener, "2001:db8:0:7:ffff:ffff:ffff:ffff", false);
        let (_, more) = pair(&listener);
        assert_eq!(
            admission.admit(&more, peer("2001:db8:0:7:1234::99"), true).err(),
            Some(Refusal::AddressLimit),
            "another address of the same /64 has no share of its own"
        );
        let _next_subnet = hold(&admission, &listener, "2001:db8:0:8::1", false);

        let _v4 = hold(&admission, &listener, "10.0.0.1", false);
        let _mapped = hold(&admission, &listener, "::ffff:10.0.0.1", false);
        assert_eq!(admission.admit(&more, peer("10.0.0.1"), true).err(), Some(Refusal::AddressLimit));
        // and IPv4 addresses are not pooled into the mapped range's /64
        let _other_v4 = hold(&admission, &listener, "::ffff:10.0.0.2", false);
        assert_eq!(AddressGroup::of("2001:db8:0:7::1".parse().unwrap()).to_string(), "2001:db8:0:7::/64");
        assert_eq!(AddressGroup::of("::ffff:10.0.0.1".parse().unwrap()).to_string(), "10.0.0.1");
    }

    #[test]
    fn the_workers_taken_a_group_holding_more_waiting_clients_gives_before_a_lone_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = admission(limits(6, 0, 6));
        // The lone slow client is the oldest of all.
        let lone = hold(&admission, &listener, "10.0.0.5", true);
        // This address's sessions past their request do not count as waiting ones.
        let _busy: Vec<_> = (0..2).map(|_| hold(&admission, &listener, "10.0.0.1", false)).collect();
        let busy_waiting = hold(&admission, &listener, "10.0.0.1", true);
        let flood: Vec<_> = (0..2).map(|_| hold(&admission, &listener, "10.0.0.2", true)).collect();

        let newcomer = hold(&admission, &listener, "10.0.0.9", true);
        assert!(flood[0].seat.was_cut(), "the oldest of the group holding the most waiting clients goes");
        assert!(!flood[1].seat.was_cut() && !lone.seat.was_cut() && !busy_waiting.seat.was_cut());
        // Now every group holds one waiting client: the oldest of them all goes.
        let _another = hold(&admission, &listener, "10.0.0.10", true);
        assert!(lone.seat.was_cut());
        assert!(!busy_waiting.seat.was_cut() && !flood[1].seat.was_cut() && !newcomer.seat.was_cut());
    }

    #[test]
    fn a_queued_client_is_closed_when_its_wait_runs_out_unless_a_worker_took_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (admission, watch) = Admission::new(Limits { queue_wait: Duration::from_millis(50), ..limits(1, 3, 4) });
        let _running = hold(&admission, &listener, "10.0.0.1", false);
        let (_taken_client, taken) = pair(&listener);
        let taken = admission.admit(&taken, peer("10.0.0.2"), false).unwrap();
        let (mut expired_client, expired) = pair(&listener);
        let expired = admission.admit(&expired, peer("10.0.0.3"), true).unwrap();
        assert_eq!(admission.counts(), (3, 0));
        // A worker takes the first queued client in time; the second waits on.
        assert!(matches!(taken.ticket.start(), Ok(None)));
        assert_eq!(watch.next_expired(), Some(peer("10.0.0.3")));
        assert_shut(&mut expired_client);
        assert_eq!(admission.counts(), (2, 1), "its place is given back at once");
        assert!(matches!(expired.ticket.start(), Err(Expired)), "the worker that reaches it lets it go");
        drop(expired.seat);
        assert_eq!(admission.counts(), (2, 0));
        drop((admission, _running, taken.seat));
        assert_eq!(watch.next_expired(), None, "the watch ends with its admission");
    }

    #[test]
    fn capacity_sums_saturate_and_fit_within_what_descriptors_allow() {
        let huge = limits(usize::MAX, usize::MAX, usize::MAX);
        assert_eq!((huge.places(), huge.pool_waiting()), (usize::MAX, usize::MAX));
        let fitted = limits(100, 20, 50).within(110);
        assert_eq!((fitted.workers, fitted.queue, fitted.places()), (100, 10, 110));
        assert_eq!(limits(100, 20, 50).within(0).places(), 1);
    }

    #[test]
    fn a_balancers_connections_count_for_the_clients_their_headers_name() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admission = admission(limits(8, 0, 1));
        let balancer = peer("10.0.0.5");
        // Three connections from one balancer: none is charged to its address.
        let mut held = Vec::new();
        for _ in 0..3 {
            let (client, accepted) = pair(&listener);
            let Admitted { seat, ticket, reclaimed } = admission.admit_unnamed(&accepted, balancer).unwrap();
            assert_eq!(reclaimed, 0);
            held.push(Held { client, seat, waiting: ticket.start().unwrap(), _accepted: accepted });
        }
        assert_eq!(admission.counts(), (3, 0));
        // Their headers name one client twice: its share holds one, so the newer one
        // reclaims the older, still waiting, as it would have at accept.
        assert_eq!(held[0].seat.attribute("192.0.2.7".parse().unwrap()), Ok(0));
        assert_eq!(held[1].seat.attribute("192.0.2.7".parse().unwrap()), Ok(1));
        assert!(held[0].seat.was_cut() && held[0].waiting.as_ref().unwrap().was_reclaimed());
        assert_shut(&mut held[0].client);
        // Past its request, the second cannot be reclaimed: a third for that client is refused.
        assert!(!held[1].waiting.take().unwrap().stop());
        assert_eq!(held[2].seat.attribute("192.0.2.7".parse().unwrap()), Err(Refusal::AddressLimit));
        // A client's share is given back when its session ends; an unnamed connection
        // still waiting is reclaimed like any other when the workers are all taken.
        held.drain(..2);
        assert_eq!(held[0].seat.attribute("192.0.2.7".parse().unwrap()), Ok(0));
        assert_eq!(admission.counts(), (1, 0));
        let admission = super::tests::admission(limits(1, 0, 1));
        let (_, accepted) = pair(&listener);
        let Admitted { seat: unnamed, ticket, .. } = admission.admit_unnamed(&accepted, balancer).unwrap();
        let _waiting = ticket.start().unwrap();
        let _newcomer = hold(&admission, &listener, "192.0.2.8", true);
        assert!(unnamed.was_cut());
    }
}
