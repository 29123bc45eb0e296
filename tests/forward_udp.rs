//! `udp://` port forwarding over loopback: many clients at once, several replies per
//! request, session expiry.

mod common;

use common::*;
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

const REPLIES: usize = 3;
const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Sends `request` and reads `REPLIES` datagrams, which must be exactly its own replies.
fn exchange(client: &std::net::UdpSocket, service: SocketAddr, request: &str) {
    t!(client.send_to(request.as_bytes(), service));
    let mut want: HashSet<String> = (0..REPLIES).map(|i| format!("{request}#{i}")).collect();
    let mut buf = [0u8; 512];
    while !want.is_empty() {
        let (len, from) = t!(client.recv_from(&mut buf));
        assert_eq!(from, service, "replies come from the service address");
        let reply = String::from_utf8_lossy(&buf[..len]).into_owned();
        assert!(want.remove(&reply), "{request:?} got {reply:?}, not one of its own replies");
    }
}

#[test]
fn twenty_clients_at_once_each_get_only_their_own_replies() {
    let (target, sources) = udp_multi_echo("127.0.0.1:0", REPLIES);
    let (server, addrs) = start_urls(&[&format!("udp://127.0.0.1:0/{target}?ttl=30s")], &[]);
    let service = addrs[0];
    let clients: Vec<_> = (0..20)
        .map(|n| {
            thread::spawn(move || {
                let client = udp_socket_near(LOOPBACK);
                for round in 0..5 {
                    exchange(&client, service, &format!("client {n} round {round}"));
                }
            })
        })
        .collect();
    for client in clients {
        t!(client.join());
    }
    // One outbound socket per client: the target saw 20 distinct sources, none of them
    // the service's own address.
    let seen: HashSet<SocketAddr> = sources.try_iter().collect();
    assert_eq!(seen.len(), 20, "{seen:?}");
    assert!(!seen.contains(&service));
    assert_eq!(server.stats().active, 20, "sessions live until their ttl");
}

#[test]
fn a_session_ends_after_ttl_without_traffic() {
    let (target, sources) = udp_multi_echo("127.0.0.1:0", REPLIES);
    // A ttl well above a scheduling stall on a loaded machine, so the first exchange
    // itself never outlasts it.
    let (server, addrs) = start_urls(&[&format!("udp://127.0.0.1:0/{target}?ttl=1s")], &[]);
    let client = udp_socket_near(LOOPBACK);
    exchange(&client, addrs[0], "first");
    let first_outbound = t!(sources.recv_timeout(TIMEOUT));

    wait_until("the idle session is counted out", || server.stats().sessions == 1);
    assert_eq!(server.stats().active, 0);
    // Its outbound socket is closed: a datagram to it now earns a port-unreachable. Under
    // Wine the close lands a moment after the session ends, so the probe asks again.
    let probe = udp_socket_near(LOOPBACK);
    t!(probe.connect(first_outbound));
    t!(probe.set_read_timeout(Some(Duration::from_millis(100))));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        t!(probe.send(b"late reply"));
        match probe.recv(&mut [0u8; 16]) {
            // Linux reports the port-unreachable as ECONNREFUSED, Windows as WSAECONNRESET.
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => break,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            other => panic!("the old outbound socket answered: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the old outbound socket stayed open");
    }

    // The same client starts a new session with a new outbound socket.
    exchange(&client, addrs[0], "second");
    let second_outbound = t!(sources.recv_timeout(TIMEOUT));
    assert_ne!(first_outbound, second_outbound);
}

#[test]
fn ipv6_forward_and_a_large_datagram() {
    let (target, _) = udp_multi_echo("[::1]:0", 1);
    let (_server, addrs) = start_urls(&[&format!("udp://[::1]:0/{target}")], &[]);
    let client = udp_socket_near(addrs[0]);
    let big = vec![b'x'; 60_000];
    t!(client.send_to(&big, addrs[0]));
    let mut buf = vec![0u8; 65_536];
    let (len, _) = t!(client.recv_from(&mut buf));
    assert_eq!(len, big.len() + 2);
    assert_eq!(&buf[..big.len()], &big[..]);
    assert_eq!(&buf[big.len()..len], b"#0");
}

#[test]
fn stop_accepting_starts_no_new_sessions_and_live_ones_drain() {
    let (target, _) = udp_multi_echo("127.0.0.1:0", REPLIES);
    let (mut server, addrs) = start_urls(&[&format!("udp://127.0.0.1:0/{target}?ttl=30s")], &[]);
    let live = udp_socket_near(LOOPBACK);
    exchange(&live, addrs[0], "before stop");
    server.stop_accepting();
    exchange(&live, addrs[0], "after stop");
    let newcomer = udp_socket_near(LOOPBACK);
    t!(newcomer.set_read_timeout(Some(std::time::Duration::from_millis(500))));
    t!(newcomer.send_to(b"hello?", addrs[0]));
    assert!(newcomer.recv_from(&mut [0u8; 64]).is_err(), "no session for a new client after stop");
    // The live session ends after a short grace rather than its 30 s ttl.
    assert!(server.drain(TIMEOUT), "drained");
    assert_eq!(server.stats().sessions, 1);
}

/// 127.255.255.255 is the loopback network's broadcast address: sending to it fails with
/// EACCES unless the socket has SO_BROADCAST, and a socket on the wildcard address hears it.
#[test]
fn forwards_to_a_broadcast_target() {
    let (listener, _) = udp_multi_echo("0.0.0.0:0", 2);
    let broadcast = format!("127.255.255.255:{}", listener.port());
    let (_server, addrs) = start_urls(&[&format!("udp://127.0.0.1:0/{broadcast}")], &[]);
    let client = udp_socket_near(addrs[0]);
    t!(client.send_to(b"anyone?", addrs[0]));
    let mut buf = [0u8; 64];
    for i in 0..2 {
        let (len, _) = t!(client.recv_from(&mut buf));
        assert_eq!(&buf[..len], format!("anyone?#{i}").as_bytes());
    }
}

#[test]
fn a_burst_with_the_largest_datagram_amid_small_ones_comes_back_whole_and_in_order() {
    // Sent before any reply is read, the burst queues up and is relayed in batches both ways.
    let target = udp_echo_server("127.0.0.1:0");
    let (_server, addrs) = start_urls(&[&format!("udp://127.0.0.1:0/{target}")], &[]);
    let client = udp_socket_near(addrs[0]);
    t!(socket2::SockRef::from(&client).set_recv_buffer_size(1 << 20));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // the first datagram opens the session; a burst meanwhile would wait in a short queue
    t!(client.send_to(b"open", addrs[0]));
    assert_eq!(t!(client.recv_from(&mut buf)), (4, addrs[0]));
    let burst: Vec<Vec<u8>> = (0..60usize)
        .map(|i| {
            let len = if i == 30 { 65_507 } else { i * 13 % 700 };
            (0..len).map(|j| (i + j) as u8).collect()
        })
        .collect();
    for datagram in &burst {
        t!(client.send_to(datagram, addrs[0]));
    }
    for (i, datagram) in burst.iter().enumerate() {
        let (len, from) = t!(client.recv_from(&mut buf));
        assert_eq!(from, addrs[0]);
        assert!(buf[..len] == datagram[..], "datagram {i} came back whole and in order");
    }
}

/// On Windows, the ICMP port unreachable that a datagram to a closed port earns makes the
/// sending socket's next receive fail (WSAECONNRESET). Here replies go to clients that
/// have gone: the service's own socket earns those errors, and other clients must see no
/// stall for them. (Wine does not report that error on unconnected sockets, and Linux
/// never does, so there this passes either way; it guards the Windows build.)
#[test]
fn replies_to_a_client_that_has_gone_stall_no_other_client() {
    let (target, _) = udp_multi_echo("127.0.0.1:0", REPLIES);
    let (_server, addrs) = start_urls(&[&format!("udp://127.0.0.1:0/{target}?ttl=30s")], &[]);
    let other = udp_socket_near(LOOPBACK);
    exchange(&other, addrs[0], "first");
    let started = Instant::now();
    for round in 0..5 {
        // A client that asks and is gone before its replies come back.
        let gone = udp_socket_near(LOOPBACK);
        t!(gone.send_to(b"anyone?", addrs[0]));
        drop(gone);
        thread::sleep(Duration::from_millis(20));
        exchange(&other, addrs[0], &format!("round {round}"));
    }
    // 100 ms of sleeps; a receive loop that paused 200 ms on each error would take 1 s.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(600), "5 rounds took {took:?}");
}

/// The same error on a session's outbound socket, earned by a datagram to a target port
/// that is closed for a moment, must not end the session.
#[test]
fn a_datagram_the_target_refused_does_not_end_the_session() {
    let target = udp_socket_near(LOOPBACK);
    let target_addr = t!(target.local_addr());
    let (server, addrs) = start_urls(&[&format!("udp://127.0.0.1:0/{target_addr}?ttl=30s")], &[]);
    let client = udp_socket_near(LOOPBACK);
    let mut buf = [0u8; 64];
    t!(client.send_to(b"one", addrs[0]));
    let (_, outbound) = t!(target.recv_from(&mut buf));
    drop(target);
    t!(client.send_to(b"refused", addrs[0]));
    // Time for the port unreachable to come back and be read.
    thread::sleep(Duration::from_millis(200));
    let target = t!(std::net::UdpSocket::bind(target_addr));
    t!(target.set_read_timeout(Some(TIMEOUT)));
    t!(client.send_to(b"two", addrs[0]));
    let (len, from) = t!(target.recv_from(&mut buf));
    assert_eq!(&buf[..len], b"two");
    assert_eq!(from, outbound, "the same session, from the same outbound socket");
    assert_eq!(server.stats().sessions, 0, "no session has ended");
}
