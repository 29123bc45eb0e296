//! One listener's accept loop: each accepted client passes admission (which may make room
//! by reclaiming a client still in its handshake) and goes to the worker pool, or is
//! closed at once.

use super::proxied::{self, Heard};
use crate::config::ServiceSpec;
use crate::forward;
use crate::net::admission::{self, AddressGroup, Admission, Admitted, QueueWatch};
use crate::net::is_timeout;
use crate::net::worker_pool::{self, WorkerPool};
use crate::session::Context;
use crate::session::access::refused_at_accept;
use crate::session::report::FoldedWarning;
use crate::session::stats::Refusal;
use crate::socks;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the accept loop rests after running out of descriptors or memory, so that
/// it neither spins the CPU nor gives up.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One listener's accept loop.
pub(super) struct Acceptor {
    pub(super) ctx: Arc<Context>,
    pub(super) admission: Arc<Admission>,
    pub(super) workers: Arc<WorkerPool>,
    pub(super) stopping: Arc<AtomicBool>,
    pub(super) spec: Arc<ServiceSpec>,
    /// The listener's bound address (its port resolved), naming the service on the live list.
    pub(super) addr: SocketAddr,
    /// The warnings of workers reading load balancers' PROXY headers (see `proxied`).
    pub(super) balanced: Arc<Mutex<Warnings>>,
}

impl Acceptor {
    pub(super) fn run(self, listener: TcpListener) {
        let mut warnings = Warnings::default();
        let mut errors = FoldedWarning::default();
        loop {
            let accepted = listener.accept();
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            match accepted {
                Ok((stream, peer)) => self.dispatch(stream, peer, &mut warnings),
                // The listener carries the clients' handshake read timeout for them to
                // inherit (`sockopt::listen`), and Linux's accept honours it as well.
                Err(e) if is_timeout(&e) => continue,
                Err(e) => {
                    if is_out_of_descriptors(&e) {
                        self.ctx.stats.client_refused(Refusal::Descriptors);
                    }
                    let pause = accept_error_pause(&e);
                    let local = listener.local_addr().unwrap_or(self.spec.listen_addr());
                    errors.warn(|count| format!("accept on {local}: {e} ({count} times)"));
                    std::thread::sleep(pause);
                }
            }
        }
    }

    /// Admits a client and hands it to the pool; all per-client work happens on the worker.
    fn dispatch(&self, stream: TcpStream, peer: SocketAddr, warnings: &mut Warnings) {
        let config = &self.ctx.config;
        // One look at the rules per client: the same table judges its address now and its
        // requests later.
        let rules = config.rules.current();
        // A load balancer's connection is judged and charged by the client its PROXY
        // header names, once a worker has read it (see `proxied` for why not here).
        let from_balancer = config.sends_proxy_header(peer.ip());
        if !from_balancer && let Some(denied) = refused_at_accept(&rules, peer.ip()) {
            self.ctx.stats.client_refused(Refusal::Rule);
            drop(stream);
            warnings.denied.warn(|count| format!("refused {count} client(s), last {peer}: {denied}"));
            return;
        }
        // Only a SOCKS client owes us a handshake; a tcp:// client is connected at once.
        let may_wait = matches!(*self.spec, ServiceSpec::Socks(_));
        // Shared with the books, weakly, so that they can cut the client off while it may
        // still be reclaimed or waits in the queue.
        let stream = Arc::new(stream);
        let admitted = match from_balancer {
            true => self.admission.admit_unnamed(&stream, peer),
            false => self.admission.admit(&stream, peer, may_wait),
        };
        let Admitted { seat, ticket, reclaimed } = match admitted {
            Ok(admitted) => admitted,
            Err(why) => {
                self.ctx.stats.client_refused(match why {
                    admission::Refusal::AddressLimit => Refusal::AddressLimit,
                    admission::Refusal::Full => Refusal::PoolFull,
                });
                drop(stream);
                let limits = self.admission.limits();
                warnings.refused.warn(|count| match why {
                    admission::Refusal::AddressLimit => format!(
                        "refused {count} client(s), last {peer}: {} holds {} sessions \
                         (--max-clients-per-ip), none still in its handshake",
                        AddressGroup::of(peer.ip()),
                        limits.per_address
                    ),
                    admission::Refusal::Full => format!(
                        "refused {count} client(s), last {peer}: all {} workers and {} queue places \
                         hold sessions past their handshake",
                        limits.workers, limits.queue
                    ),
                });
                return;
            }
        };
        if reclaimed > 0 {
            self.ctx.stats.sessions_reclaimed(reclaimed);
            warnings.reclaimed.warn(|count| {
                format!(
                    "closed {count} client(s) still in their handshake to make room for newer ones, last for {peer}"
                )
            });
        }
        // The accepted socket's own address is the listener's, unless that is a wildcard.
        let local = if self.addr.ip().is_unspecified() { stream.local_addr().ok() } else { Some(self.addr) };
        let mut listed = self.ctx.list_session(peer, local, self.addr, Arc::default());
        self.ctx.stats.session_queued();
        let (ctx, spec, balanced) = (Arc::clone(&self.ctx), Arc::clone(&self.spec), Arc::clone(&self.balanced));
        let job = Box::new(move || {
            // The client's place is given back when its session ends, however it ends.
            let mut seat = seat;
            // One whose wait for a worker ran out was closed and counted by the queue watch.
            let Ok(waiting) = ticket.start() else { return };
            let (stream, waiting, budget) = match from_balancer {
                false => (stream, waiting, ctx.config.handshake_timeout),
                true => match proxied::hear(&ctx, stream, waiting, &mut seat, &rules, &mut listed, &balanced) {
                    Some(Heard { stream, waiting, budget }) => (stream, waiting, budget),
                    None => return,
                },
            };
            match &*spec {
                ServiceSpec::Socks(socks) => socks::serve_socks(&ctx, socks, listed, stream, waiting, rules, budget),
                ServiceSpec::TcpForward(forward) => {
                    // A forward's client owes nothing after its header: no longer reclaimable.
                    drop(waiting);
                    forward::tcp::serve(&ctx, forward, listed, admission::sole(stream), rules)
                }
                ServiceSpec::UdpForward(_) => unreachable!("UDP services have no accept loop"),
            }
        });
        // Admission keeps the pool within its bounds; this is the backstop for a thread
        // the operating system will not start.
        if let Err((job, why)) = self.workers.try_execute(job) {
            self.ctx.stats.session_refused(Refusal::PoolFull);
            drop(job); // closes the client's socket
            warnings.refused.warn(|count| match why {
                worker_pool::Refused::Full => {
                    format!("refused {count} client(s), last {peer}: the worker queue is full")
                }
                worker_pool::Refused::NoThread => {
                    format!("refused {count} client(s), last {peer}: cannot start a worker thread")
                }
            });
        }
    }
}

/// Closes each queued client whose wait for a worker runs out (`--handshake-timeout`):
/// counted and warned of like any refusal. Runs until the admission is gone.
pub(super) fn watch_queue(ctx: &Context, watch: QueueWatch) {
    let mut refused = FoldedWarning::default();
    while let Some(peer) = watch.next_expired() {
        ctx.stats.session_refused(Refusal::QueueTimeout);
        refused.warn(|count| {
            format!(
                "refused {count} client(s), last {peer}: no worker was free within {:?} (--handshake-timeout) \
                 while it waited in the queue",
                ctx.config.handshake_timeout
            )
        });
    }
}

/// The accept loop's warnings, each folded on its own; also those of the workers that
/// read load balancers' PROXY headers.
#[derive(Default)]
pub(super) struct Warnings {
    pub(super) denied: FoldedWarning,
    pub(super) refused: FoldedWarning,
    pub(super) reclaimed: FoldedWarning,
    /// A `--proxy-protocol` source's connection without a valid header.
    pub(super) no_header: FoldedWarning,
}

/// Whether `accept` failed for want of a descriptor: a client left in the backlog.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    #[cfg(unix)]
    return matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    #[cfg(not(unix))]
    return e.raw_os_error() == Some(10024); // WSAEMFILE
}

/// How long to pause after a failed accept: out of descriptors or memory needs time for
/// sessions to end; a client that gave up before we accepted needs none.
fn accept_error_pause(e: &io::Error) -> Duration {
    match e.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted => {
            Duration::ZERO
        }
        _ => ACCEPT_BACKOFF,
    }
}
