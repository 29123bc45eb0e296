//! burrowd: a SOCKS4/4a/5 and HTTP proxy server and port forwarder.
//!
//! Synchronous and thread-per-connection on `std::net`: a listener hands each accepted
//! client to a bounded worker pool; the worker runs the handshake, then relays with two
//! copy threads.
//!
//! The modules are layers, listed here from the bottom up; each names only those above it
//! in this list, never one below it:
//! - [`wire`]: the wire formats, pure parse and emit, no I/O;
//! - [`config`]: what a running burrowd is told (flags, service URLs, users, units);
//! - `net`: socket and thread mechanics under every protocol (socket options, reading a
//!   handshake message, admission, the worker pool, the TCP relay, UDP batching, stack
//!   pages, the descriptor limit);
//! - `outbound`: reaching a target, directly or through the upstream SOCKS5 chain;
//! - `session`: what every session shares (the context, counters) and how one is run
//!   and logged;
//! - `http`: HTTP/1.x proxy requests (CONNECT, absolute-form forwarding);
//! - `socks` and `forward`: the services, SOCKS4/4a/5 (handing any other first byte to
//!   `http`) and `tcp://` / `udp://`;
//! - `server`: listeners, accept loops, start and stop.

// Unsafe code is refused everywhere; the modules that need system calls with no safe
// wrapper (net::splice, net::stack, net::udp_batch, net::descriptors, net::readiness,
// net::interfaces, and a Windows, a Linux and a macOS call in net::sockopt) opt out explicitly.
#![deny(unsafe_code)]
// What is public is public on purpose: the binary, the tests and the benchmark use it.
#![warn(unreachable_pub)]

pub mod config;
mod forward;
mod http;
mod net;
mod outbound;
mod server;
mod session;
mod socks;
pub mod wire;

pub use config::Config;
pub use server::Server;
pub use session::stats::Snapshot;
