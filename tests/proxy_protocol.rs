//! Clients behind a load balancer (`--proxy-protocol`), over loopback: the test is the
//! balancer, sending PROXY headers v1 and v2 itself from a trusted 127.0.0.x address, and
//! the client address it names is the one the rules, the per-address limit, `/sessions`,
//! the metrics and the UDP association's lock go by.

mod common;

use burrowd::Config;
use burrowd::config::rules::{Cidr, RuleSource, Rules, Verdict};
use burrowd::wire::proxy_header::{Addresses, Header, V1_MAX_LEN, Version};
use burrowd::wire::socks5::{Command, ReplyCode};
use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The balancer: 127.0.0.1 trusted, plus `rules`. Clients named in headers are not
/// loopback, so the echo target on 127.0.0.1 is opened to them by a rule, as it must be.
fn behind_balancer(rules: &[(Verdict, &str)]) -> Config {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.proxy_protocol = vec![t!(Cidr::parse("127.0.0.1"))];
    config.status = Some("127.0.0.1:0".parse().unwrap());
    let mut sources: Vec<_> = rules.iter().map(|(verdict, text)| RuleSource::Flag(*verdict, (*text).into())).collect();
    sources.push(RuleSource::Flag(Verdict::Allow, "to 127.0.0.1".into()));
    sources.push(RuleSource::Flag(Verdict::Allow, "to *".into()));
    config.rules = t!(Rules::load(sources));
    config
}

fn header(version: Version, client: &str, proxy: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(source), SocketAddr::V4(destination)) = (client.parse().unwrap(), proxy) else {
        panic!("IPv4 here")
    };
    let mut buf = [0u8; V1_MAX_LEN];
    let len = Header::Proxied { version, addresses: Addresses::V4 { source, destination } }.emit(&mut buf);
    buf[..len].to_vec()
}

/// A connection from `from` that sends `bytes` first, as a balancer does.
fn connect_with(from: &str, proxy: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = connect_from(from.parse().unwrap(), proxy);
    t!(stream.write_all(bytes));
    stream
}

/// A SOCKS5 CONNECT to `target` after `bytes`; returns the reply code and the stream.
fn connect_after(bytes: &[u8], proxy: SocketAddr, target: SocketAddr) -> (ReplyCode, TcpStream) {
    let mut stream = connect_with("127.0.0.1", proxy, bytes);
    socks5_login(&mut stream, None);
    let (code, _) = socks5_request(&mut stream, Command::Connect, &ip_target(target));
    (code, stream)
}

fn sessions(proxy: &burrowd::Server) -> String {
    let mut stream = connect(proxy.status_addr().unwrap());
    t!(stream.write_all(b"GET /sessions HTTP/1.1\r\n\r\n"));
    String::from_utf8_lossy(&read_to_end(&mut stream)).split_once("\r\n\r\n").unwrap().1.to_owned()
}

fn metric(proxy: &burrowd::Server, sample: &str) -> u64 {
    let mut stream = connect(proxy.status_addr().unwrap());
    t!(stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n"));
    let text = String::from_utf8_lossy(&read_to_end(&mut stream)).into_owned();
    text.lines().find_map(|line| line.strip_prefix(sample)?.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn v1_and_v2_headers_name_the_client_the_table_shows_beside_the_socket_legs() {
    let (proxy, proxy_addr) = start(behind_balancer(&[]));
    let target = echo_server("127.0.0.1:0");
    for (version, client) in [(Version::V1, "192.0.2.7:5000"), (Version::V2, "192.0.2.8:6000")] {
        let (code, stream) = connect_after(&header(version, client, proxy_addr), proxy_addr, target);
        assert_eq!(code, ReplyCode::SUCCEEDED, "{version}");
        let leg = t!(stream.local_addr()).to_string();
        wait_until("the relay is listed", || sessions(&proxy).contains(&format!("relay {leg}")));
        let table = sessions(&proxy);
        let row: Vec<&str> =
            table.lines().find(|line| line.contains(&format!("relay {leg}"))).unwrap().split(' ').collect();
        // The socket's legs as ss shows them, and the carried client in a column of its own.
        assert_eq!((row[2], row[3], row[13]), (&leg[..], &proxy_addr.to_string()[..], client), "{table}");
        assert_echoes(stream, b"through the balancer");
    }
}

#[test]
fn from_rules_judge_the_carried_client_not_the_balancer() {
    let (_proxy, proxy_addr) = start(behind_balancer(&[(Verdict::Deny, "from 192.0.2.66")]));
    let target = echo_server("127.0.0.1:0");
    let (code, stream) = connect_after(&header(Version::V1, "192.0.2.7:5000", proxy_addr), proxy_addr, target);
    assert_eq!(code, ReplyCode::SUCCEEDED);
    assert_echoes(stream, b"allowed");
    let mut denied = connect_with("127.0.0.1", proxy_addr, &header(Version::V2, "192.0.2.66:5000", proxy_addr));
    t!(denied.write_all(&[5, 1, 0]));
    assert_closed(&mut denied);
}

#[test]
fn a_trusted_source_without_a_valid_header_is_refused_and_counted() {
    let mut config = behind_balancer(&[]);
    config.handshake_timeout = Duration::from_millis(500);
    let (proxy, proxy_addr) = start(config);
    // A SOCKS5 greeting where the header should be: closed without a reply.
    let mut bare = connect_with("127.0.0.1", proxy_addr, &[5, 1, 0]);
    assert_closed(&mut bare);
    // A v1 line with no end, past its 107 bytes.
    let mut endless = connect_with("127.0.0.1", proxy_addr, &[b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat());
    assert_closed(&mut endless);
    // Silence: cut at the handshake timeout.
    let started = Instant::now();
    let mut silent = connect_from("127.0.0.1".parse().unwrap(), proxy_addr);
    assert_closed(&mut silent);
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());
    wait_until("three refusals counted", || metric(&proxy, "burrowd_refusals_total{reason=\"proxy_header\"}") == 3);
    assert_eq!(proxy.stats().sessions, 0, "a refusal, not a session");
}

#[test]
fn other_sources_are_served_as_ever_and_a_header_from_them_is_a_malformed_request() {
    let mut config = behind_balancer(&[]);
    config.proxy_protocol = vec![t!(Cidr::parse("127.0.0.2"))];
    let (_proxy, proxy_addr) = start(config);
    let target = echo_server("127.0.0.1:0");
    assert_echoes(socks5_connect(proxy_addr, target), b"direct client");
    // A port that serves HTTP beside SOCKS takes either for the start of an HTTP request
    // head (a v1 line's end, a v2 signature's blank lines), and a malformed one.
    for version in [Version::V1, Version::V2] {
        let forged = [header(version, "192.0.2.7:5000", proxy_addr), b"\r\n".to_vec()].concat();
        let mut forged = connect_with("127.0.0.1", proxy_addr, &forged);
        let answer = String::from_utf8_lossy(&read_to_end(&mut forged)).into_owned();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{version}: {answer}");
    }
    let mut trusted = connect_with("127.0.0.2", proxy_addr, &header(Version::V1, "192.0.2.7:5000", proxy_addr));
    socks5_login(&mut trusted, None);
    assert_eq!(socks5_request(&mut trusted, Command::Connect, &ip_target(target)).0, ReplyCode::SUCCEEDED);
}

#[test]
fn the_per_address_limit_counts_carried_clients_and_never_the_balancer() {
    let mut config = behind_balancer(&[]);
    config.max_clients_per_ip = Some(1);
    let (proxy, proxy_addr) = start(config);
    let target = echo_server("127.0.0.1:0");
    // One relaying session each for three clients, all through the one balancer address.
    let mut relaying = Vec::new();
    for client in ["192.0.2.7:5000", "192.0.2.8:5000", "192.0.2.9:5000"] {
        let (code, stream) = connect_after(&header(Version::V2, client, proxy_addr), proxy_addr, target);
        assert_eq!(code, ReplyCode::SUCCEEDED, "{client}");
        relaying.push(stream);
    }
    // A second session for one of them is past its share: refused, counted as such.
    let mut second = connect_with("127.0.0.1", proxy_addr, &header(Version::V1, "192.0.2.8:5001", proxy_addr));
    t!(second.write_all(&[5, 1, 0]));
    assert_closed(&mut second);
    wait_until("the refusal is counted", || {
        metric(&proxy, "burrowd_refusals_total{reason=\"per_address_limit\"}") == 1
    });
    for stream in relaying {
        assert_echoes(stream, b"still relaying");
    }
}

#[test]
fn a_carried_clients_newcomer_reclaims_its_own_oldest_unfinished_handshake_only() {
    let mut config = behind_balancer(&[]);
    config.max_clients_per_ip = Some(1);
    let (proxy, proxy_addr) = start(config);
    let target = echo_server("127.0.0.1:0");
    // Two clients' headers, then silence where their SOCKS greetings should be.
    let mut stalled = connect_with("127.0.0.1", proxy_addr, &header(Version::V1, "192.0.2.7:5000", proxy_addr));
    let other = connect_with("127.0.0.1", proxy_addr, &header(Version::V1, "192.0.2.8:5000", proxy_addr));
    wait_until("both are named", || sessions(&proxy).matches(" 192.0.2.").count() == 2);
    // The first client again: its stalled handshake makes room, the other client's stays.
    let (code, stream) = connect_after(&header(Version::V2, "192.0.2.7:5001", proxy_addr), proxy_addr, target);
    assert_eq!(code, ReplyCode::SUCCEEDED);
    assert_closed(&mut stalled);
    assert_eq!(metric(&proxy, "burrowd_reclaimed_total"), 1);
    assert!(sessions(&proxy).contains(" 192.0.2.8:5000"), "the other client's handshake is not touched");
    assert_echoes(stream, b"made room");
    drop(other);
}

#[test]
fn v2_local_is_the_balancer_itself_as_are_headers_naming_no_ip_client() {
    let local: [u8; 16] =
        [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00, 0x00];
    let (proxy, proxy_addr) = start(behind_balancer(&[]));
    let target = echo_server("127.0.0.1:0");
    for first in [&local[..], b"PROXY UNKNOWN\r\n"] {
        let (code, stream) = connect_after(first, proxy_addr, target);
        assert_eq!(code, ReplyCode::SUCCEEDED);
        let leg = t!(stream.local_addr()).to_string();
        wait_until("the relay is listed", || sessions(&proxy).contains(&format!("relay {leg}")));
        let table = sessions(&proxy);
        let row = table.lines().find(|line| line.contains(&format!("relay {leg}"))).unwrap();
        assert!(row.ends_with(" -"), "no carried client: {table}");
        assert_echoes(stream, b"health check");
    }
    // The balancer is the client then, and the rules judge its address.
    let (_proxy, proxy_addr) = start(behind_balancer(&[(Verdict::Deny, "from 127.0.0.1")]));
    let mut denied = connect_with("127.0.0.1", proxy_addr, &local);
    t!(denied.write_all(&[5, 1, 0]));
    assert_closed(&mut denied);
}

#[test]
fn a_tcp_forward_behind_the_balancer_relays_what_follows_the_header() {
    let target = echo_server("127.0.0.1:0");
    // A forward's rules judge who uses it: the carried client, here by a `from` rule.
    let mut config = behind_balancer(&[(Verdict::Deny, "from 192.0.2.66"), (Verdict::Allow, "from 192.0.2.0/24")]);
    config.services = vec![t!(burrowd::config::service_url::parse_service(&format!("tcp://127.0.0.1:0/{target}")))];
    let (_proxy, forward) = start(config);
    let stream = connect_with("127.0.0.1", forward, &header(Version::V2, "192.0.2.7:5000", forward));
    assert_echoes(stream, b"forwarded without the header");
    let mut denied = connect_with("127.0.0.1", forward, &header(Version::V1, "192.0.2.66:5000", forward));
    assert_closed(&mut denied);
}

#[test]
fn the_udp_association_locks_to_the_carried_client() {
    // Loopback has many addresses: the control connection comes from the balancer at
    // 127.0.0.1, the header names 127.0.0.3, and datagrams come from there directly.
    let (_proxy, proxy_addr) = start(behind_balancer(&[]));
    let echo = udp_echo_server("127.0.0.1:0");
    let client_socket = t!(std::net::UdpSocket::bind("127.0.0.3:0"));
    t!(client_socket.set_read_timeout(Some(TIMEOUT)));
    let carried = t!(client_socket.local_addr());
    let mut control = connect_with("127.0.0.1", proxy_addr, &header(Version::V1, &carried.to_string(), proxy_addr));
    socks5_login(&mut control, None);
    let (code, relay) = socks5_request(&mut control, Command::UdpAssociate, &ip_target("0.0.0.0:0".parse().unwrap()));
    assert_eq!(code, ReplyCode::SUCCEEDED);
    let burrowd::wire::addr::TargetAddr::Ip(relay) = relay else { panic!("{relay}") };
    // From the balancer's address: foreign, dropped.
    let balancer_socket = udp_socket_near("127.0.0.1:0".parse().unwrap());
    t!(balancer_socket.set_read_timeout(Some(Duration::from_millis(300))));
    t!(balancer_socket.send_to(&datagram(0, &ip_target(echo), b"from the balancer"), relay));
    let mut buf = [0u8; 512];
    assert!(balancer_socket.recv_from(&mut buf).is_err(), "a datagram from the balancer's address is foreign");
    // From the carried client: relayed and answered.
    t!(client_socket.send_to(&datagram(0, &ip_target(echo), b"from the client"), relay));
    let (len, from) = t!(client_socket.recv_from(&mut buf));
    assert_eq!(from, relay);
    assert!(buf[..len].ends_with(b"from the client"));
}
