//! One listener's accept loop: each accepted client goes to the worker pool, or is closed
//! at once when the pool is full.

use crate::config::ServiceSpec;
use crate::forward;
use crate::net::worker_pool::{Refused, WorkerPool};
use crate::session::Context;
use crate::session::report::FoldedWarning;
use crate::socks;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long the accept loop rests after running out of descriptors or memory, so that
/// it neither spins the CPU nor gives up.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One listener's accept loop.
pub(super) struct Acceptor {
    pub(super) ctx: Arc<Context>,
    pub(super) workers: Arc<WorkerPool>,
    pub(super) stopping: Arc<AtomicBool>,
    pub(super) spec: Arc<ServiceSpec>,
}

impl Acceptor {
    pub(super) fn run(self, listener: TcpListener) {
        let mut refusals = FoldedWarning::default();
        let mut errors = FoldedWarning::default();
        loop {
            let accepted = listener.accept();
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            match accepted {
                Ok((stream, peer)) => self.dispatch(stream, peer, &mut refusals),
                Err(e) => {
                    let pause = accept_error_pause(&e);
                    errors.warn(|count| format!("accept on {:?}: {e} ({count} times)", listener.local_addr().ok()));
                    std::thread::sleep(pause);
                }
            }
        }
    }

    /// Hands a client to the pool; all per-client work happens on the worker.
    fn dispatch(&self, stream: TcpStream, peer: SocketAddr, refusals: &mut FoldedWarning) {
        let id = self.ctx.new_session_id();
        self.ctx.stats.session_queued();
        let (ctx, spec) = (Arc::clone(&self.ctx), Arc::clone(&self.spec));
        let job = Box::new(move || match &*spec {
            ServiceSpec::Socks(socks) => socks::serve_socks(&ctx, socks, id, stream, peer),
            ServiceSpec::TcpForward(forward) => forward::tcp::serve(&ctx, forward, id, stream, peer),
            ServiceSpec::UdpForward(_) => unreachable!("UDP services have no accept loop"),
        });
        if let Err((job, why)) = self.workers.try_execute(job) {
            self.ctx.stats.session_refused();
            drop(job); // closes the client's socket
            let limits = (self.ctx.config.max_clients, self.ctx.config.queue);
            refusals.warn(|count| match why {
                Refused::Full => format!(
                    "refused {count} client(s), last {peer}: all {} workers busy and {} waiting",
                    limits.0, limits.1
                ),
                Refused::NoThread => format!("refused {count} client(s), last {peer}: cannot start a worker thread"),
            });
        }
    }
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
