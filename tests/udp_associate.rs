//! UDP ASSOCIATE over loopback: a real proxy in-process, real UDP targets, a real client.

mod common;

use burrowd::Config;
use burrowd::wire::addr::TargetAddr;
use burrowd::wire::socks5::{Command, Greeting, MethodChoice, ReplyCode, method};
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Sends `payload` to `target` through `association` and asserts the echo comes back
/// labelled with `labelled`.
fn assert_echo(association: &UdpAssociation, target: &TargetAddr, labelled: SocketAddr, payload: &[u8]) {
    association.send(target, payload);
    let (source, echoed) = association.recv();
    assert_eq!(source, TargetAddr::Ip(labelled), "reply labelled with the target's address");
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "payload changed on the way");
}

#[test]
fn round_trip_to_an_ipv4_target() {
    let (_server, proxy) = proxy();
    let echo = udp_echo_server("127.0.0.1:0");
    let association = UdpAssociation::open(proxy, None);
    assert_eq!(association.relay.ip(), proxy.ip(), "relay bound to the address the client reached");
    assert_ne!(association.relay.port(), 0);
    assert_echo(&association, &ip_target(echo), echo, b"ping over ipv4");
    assert_echo(&association, &ip_target(echo), echo, b"");
}

#[test]
fn round_trip_to_an_ipv6_target() {
    let (_server, proxy) = proxy();
    let echo = udp_echo_server("[::1]:0");
    let association = UdpAssociation::open(proxy, None);
    assert_echo(&association, &ip_target(echo), echo, b"ping over ipv6");
}

#[test]
fn round_trip_with_the_client_on_ipv6() {
    let (_server, proxy) = start(Config::socks_on("[::1]:0".parse().unwrap()));
    let echo = udp_echo_server("127.0.0.1:0");
    let association = UdpAssociation::open(proxy, None);
    assert_eq!(association.relay.ip(), proxy.ip(), "an IPv6 client gets an IPv6 relay");
    assert_echo(&association, &ip_target(echo), echo, b"v6 client, v4 target");
}

#[test]
fn round_trip_to_a_domain_target() {
    let (_server, proxy) = proxy();
    let echo = udp_echo_server("127.0.0.1:0");
    let association = UdpAssociation::open(proxy, None);
    let by_name = domain_target("localhost", echo.port());
    // localhost resolves to 127.0.0.1 (the client's family is preferred); the reply
    // carries the address the datagram came from
    assert_echo(&association, &by_name, echo, b"query by name");
    assert_echo(&association, &by_name, echo, b"second query, from the name cache");
}

#[test]
fn two_targets_through_one_association_are_told_apart() {
    let (_server, proxy) = proxy();
    let first = udp_echo_server("127.0.0.1:0");
    let second = udp_echo_server("127.0.0.1:0");
    let association = UdpAssociation::open(proxy, None);
    association.send(&ip_target(first), b"to first");
    association.send(&ip_target(second), b"to second");
    let mut replies = [association.recv(), association.recv()];
    replies.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(replies[0], (ip_target(first), b"to first".to_vec()));
    assert_eq!(replies[1], (ip_target(second), b"to second".to_vec()));
}

#[test]
fn a_fragment_is_dropped() {
    let (_server, proxy) = proxy();
    let echo = udp_echo_server("127.0.0.1:0");
    let association = UdpAssociation::open(proxy, None);
    association.send_with_frag(1, &ip_target(echo), b"fragment 1");
    association.send_with_frag(0x81, &ip_target(echo), b"last fragment");
    // loopback keeps order: had a fragment been relayed, its echo would come first
    assert_echo(&association, &ip_target(echo), echo, b"whole datagram");
}

#[test]
fn datagrams_from_another_port_are_dropped_once_the_first_fixed_it() {
    let (_server, proxy) = proxy();
    let echo = udp_echo_server("127.0.0.1:0");
    let association = UdpAssociation::open(proxy, None);
    assert_echo(&association, &ip_target(echo), echo, b"fixes the client port");

    let intruder = udp_socket_near(proxy);
    t!(intruder.send_to(&datagram(0, &ip_target(echo), b"from an intruder"), association.relay));
    // were it relayed, its echo would be sent to the client ahead of this one
    assert_echo(&association, &ip_target(echo), echo, b"still only mine");
}

#[test]
fn datagrams_from_another_ip_are_dropped() {
    let (_server, proxy) = proxy();
    let echo = udp_echo_server("127.0.0.1:0");
    let association = UdpAssociation::open(proxy, None);
    let intruder = t!(UdpSocket::bind("127.0.0.2:0"));
    t!(intruder.send_to(&datagram(0, &ip_target(echo), b"from 127.0.0.2"), association.relay));
    // the intruder came first, so it would have fixed the client port; it must not have
    assert_echo(&association, &ip_target(echo), echo, b"from the client");
}

#[test]
fn the_port_named_in_the_request_is_the_only_one_accepted() {
    let (_server, proxy) = proxy();
    let echo = udp_echo_server("127.0.0.1:0");
    let client = udp_socket_near(proxy);
    let named = ip_target(t!(client.local_addr()));
    let association = UdpAssociation::open_from(proxy, client, &named, None);
    let other = udp_socket_near(proxy);
    t!(other.set_read_timeout(Some(Duration::from_millis(300))));
    t!(other.send_to(&datagram(0, &ip_target(echo), b"wrong port"), association.relay));
    assert_echo(&association, &ip_target(echo), echo, b"named port");
    let mut buf = [0u8; 64];
    let err = other.recv_from(&mut buf).expect_err("nothing is relayed for the wrong port");
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
}

#[test]
fn a_client_that_names_its_target_in_dst_and_sends_from_another_port_is_served() {
    let (_server, proxy) = proxy();
    // The target is on another address than the client, as a remote target would be.
    let echo = udp_echo_server("127.0.0.2:0");
    let unspecified_with_its_port = ip_target(SocketAddr::new([0, 0, 0, 0].into(), echo.port()));
    for dst in [ip_target(echo), unspecified_with_its_port, domain_target("localhost", echo.port())] {
        let association = UdpAssociation::open_from(proxy, udp_socket_near(proxy), &dst, None);
        // An intruder from another IP speaks first, and fixes nothing.
        let intruder = t!(UdpSocket::bind("127.0.0.3:0"));
        t!(intruder.set_read_timeout(Some(Duration::from_millis(300))));
        t!(intruder.send_to(&datagram(0, &ip_target(echo), b"intruder"), association.relay));
        assert_echo(&association, &ip_target(echo), echo, b"DST named the target");
        // The first datagram from the client's IP fixed its port.
        let other_port = udp_socket_near(proxy);
        t!(other_port.set_read_timeout(Some(Duration::from_millis(300))));
        t!(other_port.send_to(&datagram(0, &ip_target(echo), b"another port"), association.relay));
        assert_echo(&association, &ip_target(echo), echo, b"still only the first port");
        for dropped in [&intruder, &other_port] {
            let err = dropped.recv_from(&mut [0u8; 64]).expect_err("nothing is relayed for them");
            assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{dst}: {err}");
        }
    }
}

#[test]
fn the_largest_ipv4_datagrams_pass_intact() {
    let (_server, proxy) = proxy();
    let echo = udp_echo_server("127.0.0.1:0");
    let association = UdpAssociation::open(proxy, None);
    // over IPv4 the client's datagram holds at most 65,507 bytes, 10 of them the header
    let payload: Vec<u8> = (0..65_497u32).map(|i| (i % 251) as u8).collect();
    assert_echo(&association, &ip_target(echo), echo, &payload);
}

#[test]
fn a_65507_byte_payload_reaches_an_ipv4_target_intact() {
    // The IPv4 maximum of 65,507 payload bytes plus the 10-byte header only fits on the
    // client's leg over IPv6, so the client talks to the proxy on [::1].
    let (_server, proxy) = start(Config::socks_on("[::1]:0".parse().unwrap()));
    let echo = udp_echo_server("127.0.0.1:0");
    let association = UdpAssociation::open(proxy, None);
    let payload: Vec<u8> = (0..65_507u32).map(|i| (i % 253) as u8).collect();
    assert_echo(&association, &ip_target(echo), echo, &payload);
}

#[test]
fn largest_and_small_datagrams_in_one_burst_to_two_targets_pass_intact_and_in_order() {
    // The client sends the whole burst before reading any echo, so the relay finds several
    // datagrams queued and takes them in one batch: every size has to fit every slot.
    // Three of the largest datagrams queued at once overflow a default receive buffer.
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.udp.rcvbuf = Some(1 << 20);
    let (_server, proxy) = start(config);
    let targets = [udp_echo_server("127.0.0.1:0"), udp_echo_server("[::1]:0")];
    let association = UdpAssociation::open(proxy, None);
    t!(socket2::SockRef::from(&association.socket).set_recv_buffer_size(1 << 20));
    // over IPv4 the client's datagram holds at most 65,507 bytes, 10 or 22 of them the header
    let sizes = [65_497, 3, 1400, 65_485, 0, 512, 9000, 17, 1, 65_485];
    let mut expected: [Vec<Vec<u8>>; 2] = Default::default();
    for (i, size) in sizes.into_iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|j| (j * 31 + i) as u8).collect();
        let to = if size == 65_497 { 0 } else { i % 2 };
        association.send(&ip_target(targets[to]), &payload);
        expected[to].push(payload);
    }
    let mut echoed: [Vec<Vec<u8>>; 2] = Default::default();
    for _ in sizes {
        let (source, payload) = association.recv();
        echoed[usize::from(source != ip_target(targets[0]))].push(payload);
    }
    assert!(echoed == expected, "each target's datagrams came back whole and in order");
}

/// Waits (bounded) until datagrams from `socket` to `to` are refused: a closed UDP port
/// makes the kernel answer with port unreachable, which a connected socket reads as
/// ECONNREFUSED (WSAECONNRESET on Windows).
fn assert_port_closes(socket: &UdpSocket, to: SocketAddr, probe: &[u8]) {
    t!(socket.connect(to));
    t!(socket.set_read_timeout(Some(Duration::from_millis(100))));
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 64];
    loop {
        t!(socket.send(probe));
        match socket.recv(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset) => return,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("{to} still answers: {other:?}"),
        }
        assert!(Instant::now() < deadline, "{to} did not close");
    }
}

#[test]
fn the_association_ends_with_its_control_connection() {
    let (server, proxy) = proxy();
    // a target that shows which socket burrowd sends to targets from
    let target = udp_socket_near(proxy);
    let target_addr = t!(target.local_addr());
    let association = UdpAssociation::open(proxy, None);
    association.send(&ip_target(target_addr), b"hello");
    let mut buf = [0u8; 64];
    let (len, outbound) = t!(target.recv_from(&mut buf));
    assert_eq!(&buf[..len], b"hello");
    t!(target.send_to(b"hello back", outbound));
    assert_eq!(association.recv(), (ip_target(target_addr), b"hello back".to_vec()));

    let UdpAssociation { control, socket, relay } = association;
    drop(control);
    assert!(server.drain(TIMEOUT), "the association's session ended");
    assert_port_closes(&socket, relay, &datagram(0, &ip_target(target_addr), b"anyone there?"));
    assert_port_closes(&target, SocketAddr::new(proxy.ip(), outbound.port()), b"late reply");
}

#[test]
fn a_reset_control_connection_ends_the_association() {
    let (server, proxy) = proxy();
    let echo = udp_echo_server("127.0.0.1:0");
    let association = UdpAssociation::open(proxy, None);
    assert_echo(&association, &ip_target(echo), echo, b"alive");
    // linger 0: close sends a reset instead of a FIN
    t!(socket2::SockRef::from(&association.control).set_linger(Some(Duration::ZERO)));
    let UdpAssociation { control, socket, relay } = association;
    drop(control);
    assert!(server.drain(TIMEOUT), "the association's session ended");
    assert_port_closes(&socket, relay, &datagram(0, &ip_target(echo), b"anyone there?"));
}

#[test]
fn an_idle_association_is_closed() {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.udp.idle_timeout = Some(Duration::from_millis(300));
    let (_server, proxy) = start(config);
    let mut association = UdpAssociation::open(proxy, None);
    let mut rest = Vec::new();
    t!(association.control.read_to_end(&mut rest));
    assert!(rest.is_empty(), "nothing but a close after the reply");
}

#[test]
fn shutdown_ends_associations() {
    let (mut server, proxy) = proxy();
    let mut association = UdpAssociation::open(proxy, None);
    server.stop_accepting();
    let mut rest = Vec::new();
    t!(association.control.read_to_end(&mut rest));
    assert!(rest.is_empty(), "nothing but a close after the reply");
    assert!(server.drain(TIMEOUT));
    assert_port_closes(&association.socket, association.relay, &datagram(0, &ip_target(association.relay), b"?"));
}

#[test]
fn a_datagram_to_the_loopback_broadcast_address_is_delivered() {
    // 127.255.255.255 is the broadcast address of lo's 127.0.0.0/8: sending there needs
    // SO_BROADCAST on the socket that sends to targets (EACCES without it).
    let (_server, proxy) = proxy();
    let listener = t!(UdpSocket::bind("127.255.255.255:0"));
    t!(listener.set_read_timeout(Some(TIMEOUT)));
    let port = t!(listener.local_addr()).port();
    let association = UdpAssociation::open(proxy, None);
    association.send(&ip_target(SocketAddr::new("127.255.255.255".parse().unwrap(), port)), b"to everyone");
    let mut buf = [0u8; 64];
    let (len, _) = t!(listener.recv_from(&mut buf));
    assert_eq!(&buf[..len], b"to everyone");
}

#[test]
fn with_users_an_association_needs_a_login() {
    let (_server, proxy) = start(Config::socks_with_users("127.0.0.1:0".parse().unwrap(), &["alice:secret"]));
    let echo = udp_echo_server("127.0.0.1:0");

    let mut anonymous = connect(proxy);
    let mut greeting = [0u8; 3];
    let len = Greeting { methods: &[method::NO_AUTH] }.emit(&mut greeting);
    t!(anonymous.write_all(&greeting[..len]));
    let mut choice = [0u8; MethodChoice::LEN];
    t!(anonymous.read_exact(&mut choice));
    assert_eq!(t!(MethodChoice::parse(&choice)).method, method::NONE_ACCEPTABLE);
    assert!(read_to_end(&mut anonymous).is_empty(), "closed without a UDP reply");

    let association = UdpAssociation::open(proxy, Some(("alice", "secret")));
    assert_echo(&association, &ip_target(echo), echo, b"logged in");
}

#[test]
fn the_reply_advertises_the_configured_address_and_port_range() {
    // the only port in the range is taken: the request fails with a general failure
    let taken = t!(UdpSocket::bind("127.0.0.1:0"));
    let port = t!(taken.local_addr()).port();
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.udp.port_range = Some(port..=port);
    config.udp.advertise = Some("127.0.0.3".parse().unwrap());
    let (_server, proxy) = start(config);
    let mut refused = connect(proxy);
    socks5_login(&mut refused, None);
    let (code, _) = socks5_request(&mut refused, Command::UdpAssociate, &ip_target("0.0.0.0:0".parse().unwrap()));
    assert_eq!(code, ReplyCode::GENERAL_FAILURE);

    drop(taken);
    let echo = udp_echo_server("127.0.0.1:0");
    let mut association = UdpAssociation::open(proxy, None);
    assert_eq!(association.relay, SocketAddr::new("127.0.0.3".parse().unwrap(), port));
    // the advertised address is for clients behind NAT; here the socket is on 127.0.0.1
    association.relay = SocketAddr::new(proxy.ip(), port);
    assert_echo(&association, &ip_target(echo), echo, b"through the ranged port");
}
