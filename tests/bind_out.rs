//! `bind-out` over loopback: targets that record their peer's address see the one the
//! service chose, for CONNECT, a chained CONNECT, BIND, UDP ASSOCIATE and the forwarders;
//! a target of a family the service does not use is refused with reply 3; `same` gives each
//! listener the address its clients reached; an address this host lacks stops the start.
//! 127.0.0.0/8 is all this host's, so 127.0.0.2 and up serve as its "other addresses".

mod common;

use burrowd::wire::socks5::{Command, ReplyCode};
use common::*;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::thread;

/// A TCP target that writes the address its peer came from, then closes.
fn peer_reporter(bind: &str) -> SocketAddr {
    serve_tcp(bind, |mut stream| {
        let peer = t!(stream.peer_addr()).ip().to_string();
        let _ = stream.write_all(peer.as_bytes());
    })
}

/// A UDP target that answers each datagram with the address it came from.
fn udp_peer_reporter(bind: &str) -> SocketAddr {
    let socket = t!(UdpSocket::bind(bind));
    let addr = t!(socket.local_addr());
    thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(from.ip().to_string().as_bytes(), from);
        }
    });
    addr
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// What a reporter says of a CONNECT through `proxy`, and the address the reply carried.
fn seen_through(proxy: SocketAddr, target: SocketAddr) -> (String, IpAddr) {
    let mut stream = connect(proxy);
    socks5_login(&mut stream, None);
    let (code, bound) = socks5_request(&mut stream, Command::Connect, &ip_target(target));
    assert_eq!(code, ReplyCode::SUCCEEDED);
    let burrowd::wire::addr::TargetAddr::Ip(bound) = bound else { panic!("a name in the reply: {bound}") };
    (String::from_utf8(read_to_end(&mut stream)).unwrap(), bound.ip())
}

#[test]
fn connect_leaves_from_the_bind_out_address_and_says_so_in_the_reply() {
    let target = peer_reporter("127.0.0.1:0");
    let (_server, addrs) = start_urls(&["socks://127.0.0.1:0?bind-out=127.0.0.2"], &[]);
    assert_eq!(seen_through(addrs[0], target), ("127.0.0.2".into(), ip("127.0.0.2")));
    // The default is the routing table's choice: 127.0.0.1 toward 127.0.0.1.
    let (_plain, plain) = proxy();
    assert_eq!(seen_through(plain, target).0, "127.0.0.1");
}

#[test]
fn a_target_of_a_family_without_an_address_is_network_unreachable() {
    let v6_target = peer_reporter("[::1]:0");
    let (_server, addrs) = start_urls(&["socks://127.0.0.1:0?bind-out=127.0.0.2"], &[]);
    let mut stream = connect(addrs[0]);
    socks5_login(&mut stream, None);
    let (code, _) = socks5_request(&mut stream, Command::Connect, &ip_target(v6_target));
    assert_eq!(code, ReplyCode::NETWORK_UNREACHABLE);
    // And the other way round; a name's addresses of the other family are not tried.
    let v4_target = peer_reporter("127.0.0.1:0");
    let (_server, addrs) = start_urls(&["socks://127.0.0.1:0?bind-out=::1"], &[]);
    let mut stream = connect(addrs[0]);
    socks5_login(&mut stream, None);
    let (code, _) = socks5_request(&mut stream, Command::Connect, &domain_target("localhost", v4_target.port()));
    // localhost is 127.0.0.1 then ::1, and only ::1 is tried: nothing listens there.
    assert_eq!(code, ReplyCode::CONNECTION_REFUSED);
}

#[test]
fn a_chain_leaves_from_the_bind_out_address_at_each_hop() {
    let target = echo_server("127.0.0.1:0");
    let (second, second_addrs) = start_urls(&["socks://127.0.0.1:0?bind-out=127.0.0.4"], &[]);
    let hop = format!("socks5://{}", second_addrs[0]);
    let (_first, first_addrs) = start_urls(&["socks://127.0.0.1:0?bind-out=127.0.0.3"], &[&hop]);
    let mut stream = connect(first_addrs[0]);
    socks5_login(&mut stream, None);
    let (code, bound) = socks5_request(&mut stream, Command::Connect, &ip_target(target));
    assert_eq!(code, ReplyCode::SUCCEEDED);
    assert!(bound.to_string().starts_with("127.0.0.4:"), "the target sees the last hop's source: {bound}");
    // The hop lists its client, our outbound leg, by the address it came from.
    let table = second.session_table();
    assert!(table.lines().any(|line| line.contains(" 127.0.0.3:")), "{table}");
    assert_echoes(stream, b"through two hops");
}

#[test]
fn bind_listens_on_the_bind_out_address() {
    let (_server, addrs) = start_urls(&["socks://127.0.0.1:0?bind-out=127.0.0.2"], &[]);
    let (mut control, bound) = socks5_bind(addrs[0], "127.0.0.1:0".parse().unwrap());
    assert_eq!(bound.ip(), ip("127.0.0.2"), "the first reply names the bind-out address");
    let peer = connect_from(ip("127.0.0.1"), bound);
    let (code, _) = read_socks5_reply(&mut control);
    assert_eq!(code, ReplyCode::SUCCEEDED);
    assert_carries(&peer, &control, b"from the peer");
    // A peer named only in the other family cannot reach any address it may use.
    let mut refused = connect(addrs[0]);
    socks5_login(&mut refused, None);
    let (code, _) = socks5_request(&mut refused, Command::Bind, &ip_target("[::1]:21".parse().unwrap()));
    assert_eq!(code, ReplyCode::NETWORK_UNREACHABLE);
}

#[test]
fn udp_datagrams_leave_from_the_bind_out_address() {
    let target = udp_peer_reporter("127.0.0.1:0");
    let (_server, addrs) = start_urls(&["socks://127.0.0.1:0?bind-out=127.0.0.2"], &[]);
    let association = UdpAssociation::open(addrs[0], None);
    association.send(&ip_target(target), b"who am i");
    let (from, payload) = association.recv();
    assert_eq!((from, payload), (ip_target(target), b"127.0.0.2".to_vec()));
}

#[test]
fn same_gives_each_listener_the_address_its_clients_reached() {
    let target = peer_reporter("127.0.0.1:0");
    let (_server, addrs) =
        start_urls(&["socks://127.0.0.5:0?bind-out=same", "socks5://127.0.0.6:0?bind-out=same"], &[]);
    assert_eq!(seen_through(addrs[0], target).0, "127.0.0.5");
    assert_eq!(seen_through(addrs[1], target).0, "127.0.0.6");
    // An IPv6 listener's clients are served over IPv6 only.
    let (_v6, v6) = start_urls(&["socks://[::1]:0?bind-out=same"], &[]);
    let mut stream = connect(v6[0]);
    socks5_login(&mut stream, None);
    let (code, _) = socks5_request(&mut stream, Command::Connect, &ip_target(target));
    assert_eq!(code, ReplyCode::NETWORK_UNREACHABLE);
}

#[test]
fn an_http_connect_leaves_from_the_bind_out_address() {
    let target = peer_reporter("127.0.0.1:0");
    let (_server, addrs) = start_urls(&["http://127.0.0.1:0?bind-out=127.0.0.2"], &[]);
    let mut stream = connect(addrs[0]);
    t!(write!(stream, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"));
    let answer = String::from_utf8(read_to_end(&mut stream)).unwrap();
    assert_eq!(answer, "HTTP/1.1 200 Connection established\r\n\r\n127.0.0.2");
}

#[test]
fn a_tcp_forward_leaves_from_its_own_bind_out_address() {
    let target = peer_reporter("127.0.0.1:0");
    let (_server, addrs) = start_urls(&[&format!("tcp://127.0.0.1:0/{target}?bind-out=127.0.0.7")], &[]);
    let mut stream = connect(addrs[0]);
    assert_eq!(read_to_end(&mut stream), b"127.0.0.7");
}

#[test]
fn a_udp_forward_leaves_from_its_own_bind_out_address() {
    let target = udp_peer_reporter("127.0.0.1:0");
    let (_server, addrs) = start_urls(&[&format!("udp://127.0.0.1:0/{target}?bind-out=127.0.0.8")], &[]);
    let client = udp_socket_near(addrs[0]);
    t!(client.send_to(b"who am i", addrs[0]));
    let mut buf = [0u8; 64];
    let (len, _) = t!(client.recv_from(&mut buf));
    assert_eq!(&buf[..len], b"127.0.0.8");
}

#[test]
fn an_address_or_interface_this_host_lacks_stops_the_start() {
    // TEST-NET-1 is on no interface of a test machine.
    let url = "socks://127.0.0.1:0?bind-out=192.0.2.77";
    let config = burrowd::Config {
        services: vec![t!(burrowd::config::service_url::parse_service(url))],
        ..burrowd::Config::default()
    };
    let err = burrowd::Server::start(config).err().expect("no such address here");
    let message = err.to_string();
    assert!(message.contains("cannot bind to source address 192.0.2.77: "), "{message}");
    for args in [
        &["-l", "127.0.0.1:0", "--bind-out", "192.0.2.77"][..],
        &["-l", "127.0.0.1:0", "--interface", "nosuchif0"],
        &["-L", "udp://0.0.0.0:0/127.0.0.1:9?bind-out=same"],
    ] {
        let output = run_burrowd(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line, not {stderr}");
        assert!(stderr.starts_with("burrowd: "), "{args:?}: {stderr}");
    }
}
