//! burrowd: a SOCKS4/4a/5 proxy server and port forwarder.
//!
//! Synchronous and thread-per-connection on `std::net`: a listener hands each accepted
//! client to a bounded worker pool; the worker runs the handshake, then relays with two
//! copy threads. The wire formats live in [`wire`] as pure parse/emit code; everything
//! that touches a socket lives beside it.

// Unsafe code is refused everywhere; the modules that need system calls with no safe
// wrapper (splice, stack, udp_batch) opt out explicitly.
#![deny(unsafe_code)]

pub mod auth;
pub mod bind;
pub mod chain;
pub mod cli;
pub mod config;
pub mod connect;
pub mod forward_tcp;
pub mod forward_udp;
pub mod message_io;
pub mod pool;
pub mod relay;
pub mod reply;
pub mod server;
pub mod service_url;
pub mod session;
pub mod sockopt;
pub mod socks4;
pub mod socks5;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod stack;
pub mod stats;
pub mod udp_batch;
pub mod udp_relay;
pub mod wire;

pub use config::Config;
pub use server::Server;
