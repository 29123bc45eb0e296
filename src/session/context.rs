//! The state every session shares, and the ways out of this host it may take.

use super::access::{Access, Denied};
use super::live::{Listed, LiveSessions};
use super::stats::Stats;
use crate::config::Config;
use crate::config::rules::{Allowed, Cmd};
use crate::net::relay::{Meter, Relayer};
use crate::outbound::upstream::{self, UpstreamUdp};
use crate::outbound::{self, ConnectError, Connected, Egress};
use crate::wire::addr::TargetAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What every session shares.
pub(crate) struct Context {
    pub config: Config,
    pub stats: Stats,
    pub relayer: Arc<Relayer>,
    /// The sessions open now, for the status page and SIGUSR1.
    pub live: Arc<LiveSessions>,
    next_session: AtomicU64,
    /// Set when the server stops accepting. UDP associations, which have no end of their
    /// own, watch it and end then.
    stopping: Arc<AtomicBool>,
}

impl Context {
    /// The shared state for `config`, with the relay threads and buffers it asks for.
    pub(crate) fn new(config: Config, stopping: Arc<AtomicBool>) -> Self {
        let relayer = Arc::new(Relayer::new(
            config.max_clients,
            config.buffer_size,
            config.relay,
            config.idle_timeout,
            config.half_close_timeout,
        ));
        Context {
            config,
            stats: Stats::default(),
            relayer,
            live: Arc::new(LiveSessions::new()),
            next_session: AtomicU64::new(1),
            stopping,
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Opens the outbound connection for `cmd` to `target`, as `access` allows it, leaving as
    /// `egress` says: directly, the target's addresses of a family `egress` does not use are
    /// dropped, and every one left must be allowed before any is connected to, so a name
    /// cannot bring in an address the rules refuse; through a chain, names are resolved
    /// upstream, so the target must be allowed as it is sent.
    pub(crate) fn connect_target(
        &self,
        access: &Access,
        cmd: Cmd,
        target: &TargetAddr,
        egress: &Egress,
    ) -> Result<Connected, ConnectError> {
        let config = &self.config;
        if !config.chain.is_empty() {
            let allowed = access.permit_upstream(cmd, target.as_addr()).map_err(denied)?;
            return upstream::connect(&config.chain, &allowed, config.connect_timeout, &config.socket, egress);
        }
        let addrs = egress.reachable(outbound::resolve(target)?)?;
        let allowed = addrs.into_iter().map(|addr| access.permit_address(cmd, target.as_addr(), addr).map_err(denied));
        let allowed = Allowed::all(allowed.collect::<Result<Vec<_>, _>>()?);
        outbound::connect_any(&allowed, config.connect_timeout, &config.socket, egress)
    }

    /// The UDP association through the upstream chain that UDP traffic goes through, or
    /// `None` without a chain.
    pub(crate) fn udp_upstream(&self, egress: &Egress) -> Result<Option<UpstreamUdp>, ConnectError> {
        let config = &self.config;
        if config.chain.is_empty() {
            return Ok(None);
        }
        upstream::udp_associate(&config.chain, config.connect_timeout, &config.socket, &config.udp, egress).map(Some)
    }

    /// Lists a session that starts now, under a fresh id: a client of the service on
    /// `service`, reached on `local` (its accepted socket's address; `None` for `udp://`),
    /// whose traffic `meter` shows.
    pub(crate) fn list_session(
        &self,
        client: SocketAddr,
        local: Option<SocketAddr>,
        service: SocketAddr,
        meter: Arc<Meter>,
    ) -> Listed {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.live.list(id, client, local, service, meter)
    }
}

fn denied(denied: Denied) -> ConnectError {
    ConnectError::Denied(denied.to_string())
}
