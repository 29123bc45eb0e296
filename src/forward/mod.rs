//! gost-style port forwarding: `tcp://` ([`tcp`]) relays each connection to one fixed
//! target, `udp://` ([`udp`]) each client address's datagrams.

pub(crate) mod tcp;
pub(crate) mod udp;
