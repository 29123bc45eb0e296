//! Socket and thread mechanics under every protocol: socket options, reading one
//! handshake message at a time, the worker pool, the TCP relay, UDP batching, and giving
//! stack pages back. Nothing here knows SOCKS or a service.

pub(crate) mod admission;
#[cfg(unix)] // a per-process descriptor limit is a unix notion
pub(crate) mod descriptors;
pub(crate) mod interfaces;
pub(crate) mod negotiation;
pub(crate) mod readiness;
pub(crate) mod relay;
pub(crate) mod sockopt;
#[cfg(target_os = "linux")]
pub(crate) mod splice;
pub(crate) mod stack;
pub(crate) mod udp_batch;
pub(crate) mod worker_pool;

use std::io;

/// A read timeout shows up as WouldBlock on unix and TimedOut on Windows; callers see one.
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}
