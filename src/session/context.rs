//! The state every session shares, and the ways out of this host it may take.

use super::stats::Stats;
use crate::config::Config;
use crate::net::relay::Relayer;
use crate::outbound::upstream::{self, UpstreamUdp};
use crate::outbound::{self, ConnectError, Connected};
use crate::wire::addr::TargetAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What every session shares.
pub(crate) struct Context {
    pub config: Config,
    pub stats: Stats,
    pub relayer: Arc<Relayer>,
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
        Context { config, stats: Stats::default(), relayer, next_session: AtomicU64::new(1), stopping }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Opens the outbound connection for a request: directly, or through the upstream chain.
    pub(crate) fn connect_target(&self, target: &TargetAddr) -> Result<Connected, ConnectError> {
        let config = &self.config;
        if config.chain.is_empty() {
            outbound::connect_direct(target, config.connect_timeout, &config.socket)
        } else {
            upstream::connect(&config.chain, target, config.connect_timeout, &config.socket)
        }
    }

    /// The UDP association through the upstream chain that UDP traffic goes through, or
    /// `None` without a chain.
    pub(crate) fn udp_upstream(&self) -> Result<Option<UpstreamUdp>, ConnectError> {
        let config = &self.config;
        if config.chain.is_empty() {
            return Ok(None);
        }
        upstream::udp_associate(&config.chain, config.connect_timeout, &config.socket, &config.udp).map(Some)
    }

    /// A fresh id for a session's log line.
    pub(crate) fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}
