//! SOCKS5 BIND over loopback: the proxy listens, a third party connects, data flows both
//! ways; a wrong peer, a timeout and a client hanging up each end the wait.

mod common;

use burrowd::Config;
use burrowd::wire::addr::TargetAddr;
use burrowd::wire::socks5::ReplyCode;
use common::*;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A third party connects to the bound address; asserts the second reply names it.
fn peer_arrives(control: &mut TcpStream, bound: SocketAddr) -> TcpStream {
    let peer = connect(bound);
    let (code, announced) = read_socks5_reply(control);
    assert_eq!(code, ReplyCode::SUCCEEDED, "second BIND reply");
    assert_eq!(announced, TargetAddr::Ip(t!(peer.local_addr())), "second reply names the peer");
    peer
}

fn bind_relays_both_ways_with_half_close(listen: &str, named_peer: &str) {
    let (_server, proxy) = start(Config::socks_on(listen.parse().unwrap()));
    let (mut control, bound) = socks5_bind(proxy, named_peer.parse().unwrap());
    assert_eq!(bound.ip(), proxy.ip(), "listens on the address the client reached");
    assert_ne!(bound.port(), 0);

    let mut peer = peer_arrives(&mut control, bound);
    assert_carries(&control, &peer, b"from the client");
    assert_carries(&peer, &control, b"from the peer");
    assert_half_close(&mut control, &mut peer);
}

#[test]
fn bind_over_ipv4_accepts_the_named_peer_and_relays() {
    bind_relays_both_ways_with_half_close("127.0.0.1:0", "127.0.0.1:0");
}

#[test]
fn bind_over_ipv6_with_any_peer_relays() {
    bind_relays_both_ways_with_half_close("[::1]:0", "[::]:0");
}

/// A client on IPv6 naming an IPv4 peer: the proxy listens where that peer can connect.
#[test]
fn bind_from_an_ipv6_client_naming_an_ipv4_peer_listens_on_ipv4() {
    let (_server, proxy) = start(Config::socks_on("[::1]:0".parse().unwrap()));
    let (mut control, bound) = socks5_bind(proxy, "127.0.0.1:0".parse().unwrap());
    assert_eq!(bound.ip(), std::net::IpAddr::from([127, 0, 0, 1]), "an address of the peer's family");
    let mut peer = peer_arrives(&mut control, bound);
    assert_carries(&peer, &control, b"from an IPv4 peer");
    assert_half_close(&mut control, &mut peer);
}

#[test]
fn bind_peer_half_closes_first() {
    let (_server, proxy) = proxy();
    let (mut control, bound) = socks5_bind(proxy, "0.0.0.0:0".parse().unwrap());
    let mut peer = peer_arrives(&mut control, bound);
    assert_half_close(&mut peer, &mut control);
}

#[test]
fn bind_refuses_a_peer_other_than_the_named_one() {
    let (_server, proxy) = proxy();
    // The client expects 127.0.0.2; the connection will come from 127.0.0.1.
    let (mut control, bound) = socks5_bind(proxy, "127.0.0.2:0".parse().unwrap());
    let mut stranger = connect(bound);
    let (code, _) = read_socks5_reply(&mut control);
    assert_eq!(code, ReplyCode::NOT_ALLOWED);
    assert_closed_without_reply(&mut control);
    assert_eq!(read_to_end(&mut stranger), b"", "the stranger is closed");
    let err = TcpStream::connect_timeout(&bound, TIMEOUT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "the bound port is closed");
}

#[test]
fn bind_timeout_sends_a_failure_reply_and_closes_the_port() {
    let config =
        Config { bind_timeout: Duration::from_millis(300), ..Config::socks_on("127.0.0.1:0".parse().unwrap()) };
    let (_server, proxy) = start(config);
    let (mut control, bound) = socks5_bind(proxy, "0.0.0.0:0".parse().unwrap());
    let (code, _) = read_socks5_reply(&mut control);
    assert_eq!(code, ReplyCode::HOST_UNREACHABLE);
    assert_closed_without_reply(&mut control);
    let err = TcpStream::connect_timeout(&bound, TIMEOUT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn client_hanging_up_ends_the_wait() {
    // The default bind timeout is 60 s; the session must end long before that.
    let (server, proxy) = proxy();
    let (control, bound) = socks5_bind(proxy, "0.0.0.0:0".parse().unwrap());
    drop(control);
    assert!(server.drain(TIMEOUT), "the BIND session is still waiting after its client left");
    let err = TcpStream::connect_timeout(&bound, TIMEOUT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn bind_naming_a_host_accepts_its_addresses() {
    let (_server, proxy) = proxy();
    let mut control = connect(proxy);
    socks5_login(&mut control, None);
    let (code, bound) =
        socks5_request(&mut control, burrowd::wire::socks5::Command::Bind, &domain_target("localhost", 0));
    assert_eq!(code, ReplyCode::SUCCEEDED);
    let TargetAddr::Ip(bound) = bound else { panic!("BIND replied with a name: {bound}") };
    let peer = peer_arrives(&mut control, bound);
    assert_carries(&peer, &control, b"via a name");
}

#[test]
fn data_the_client_sends_before_the_peer_arrives_reaches_the_peer() {
    let (_server, proxy) = proxy();
    let (mut control, bound) = socks5_bind(proxy, "0.0.0.0:0".parse().unwrap());
    t!(std::io::Write::write_all(&mut control, b"sent early"));
    // Give the wait loop time to see the early bytes before the peer comes.
    std::thread::sleep(Duration::from_millis(100));
    let mut peer = peer_arrives(&mut control, bound);
    let mut early = [0u8; 10];
    t!(std::io::Read::read_exact(&mut peer, &mut early));
    assert_eq!(&early, b"sent early");
    assert_half_close(&mut control, &mut peer);
}

/// The wait blocks until the peer connects (poll, WSAPoll on Windows) rather than sleeping
/// between looks, so a peer that comes late is taken as soon as one that comes at once,
/// however coarse the system's timer (Windows' default tick is about 15.6 ms).
#[test]
fn a_peer_that_connects_late_is_taken_at_once() {
    let (_server, proxy) = proxy();
    let mut delays = Vec::new();
    for i in 0..7 {
        let (mut control, bound) = socks5_bind(proxy, "127.0.0.1:0".parse().unwrap());
        // Each a different time after the first reply, so a wait that looked on a
        // schedule would be met at every point of it.
        std::thread::sleep(Duration::from_millis(100 + 7 * i));
        let started = std::time::Instant::now();
        let _peer = peer_arrives(&mut control, bound);
        delays.push(started.elapsed());
    }
    delays.sort();
    // Sleeping between looks (every 20 ms) took 11 ms in the median here; this takes 0.2.
    assert!(delays[3] < Duration::from_millis(5), "median {:?} of {delays:?}", delays[3]);
}
