//! Access rules over real sockets: clients from different loopback addresses, logins,
//! each command, names, domains, CIDRs and ports, the first match and the default.
//! (The built-in protection from a non-loopback client is in loopback_protection_netns.rs,
//! and SIGHUP reload in binary.rs.)

mod common;

use burrowd::Config;
use burrowd::config::rules::{RuleSource, Rules, Verdict};
use burrowd::wire::addr::Addr;
use burrowd::wire::socks4;
use burrowd::wire::socks5::{Command, ReplyCode};
use common::*;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A proxy with `users` (none: no login) and the rules, in order.
fn proxy_with_rules(users: &[&str], rules: &[(Verdict, &str)]) -> (burrowd::Server, SocketAddr) {
    let mut config = Config::socks_with_users("127.0.0.1:0".parse().unwrap(), users);
    let sources = rules.iter().map(|(verdict, text)| RuleSource::Flag(*verdict, (*text).to_owned())).collect();
    config.rules = t!(Rules::load(sources));
    start(config)
}

/// The CONNECT reply code for `target`, with an optional login.
fn connect_code(proxy: SocketAddr, login: Option<(&str, &str)>, target: &burrowd::wire::addr::TargetAddr) -> u8 {
    let mut stream = connect(proxy);
    socks5_login(&mut stream, login);
    socks5_request(&mut stream, Command::Connect, target).0.0
}

use Verdict::{Allow, Deny};

#[test]
fn a_client_refused_by_its_address_alone_is_closed_before_any_handshake() {
    let (proxy, addr) = proxy_with_rules(&[], &[(Deny, "from 127.0.0.3"), (Allow, "to *")]);
    let target = echo_server("127.0.0.1:0");
    let mut refused = connect_from(IpAddr::from([127, 0, 0, 3]), addr);
    assert_closed_without_reply(&mut refused);
    assert_eq!(proxy.stats().refused, 1, "refused at accept, counted");
    assert_eq!(proxy.stats().sessions, 0, "it never became a session");
    let mut served = connect_from(IpAddr::from([127, 0, 0, 2]), addr);
    socks5_login(&mut served, None);
    assert_eq!(socks5_request(&mut served, Command::Connect, &ip_target(target)).0, ReplyCode::SUCCEEDED);
}

#[test]
fn an_allow_list_of_networks_admits_only_them() {
    // One allow rule alone: the default is to deny everyone else.
    let (_proxy, addr) = proxy_with_rules(&[], &[(Allow, "from 127.0.0.0/30")]);
    let target = echo_server("127.0.0.1:0");
    assert_echoes(socks5_connect(addr, target), b"inside");
    let mut outside = connect_from(IpAddr::from([127, 0, 0, 9]), addr);
    assert_closed_without_reply(&mut outside);
}

#[test]
fn user_rules_see_the_login() {
    let rules = [(Allow, "user alice"), (Allow, "user bob port 1-1023"), (Deny, "to *")];
    let (_proxy, addr) = proxy_with_rules(&["alice:a", "bob:b"], &rules);
    let target = ip_target(echo_server("127.0.0.1:0"));
    assert_eq!(connect_code(addr, Some(("alice", "a")), &target), 0);
    assert_eq!(connect_code(addr, Some(("bob", "b")), &target), 2, "bob only to ports below 1024");
}

#[test]
fn cmd_rules_tell_connect_bind_and_udp_apart() {
    let (_proxy, addr) = proxy_with_rules(&[], &[(Deny, "cmd bind"), (Deny, "cmd udp")]);
    let target = echo_server("127.0.0.1:0");
    assert_echoes(socks5_connect(addr, target), b"connect is allowed");
    let mut bind = connect(addr);
    socks5_login(&mut bind, None);
    assert_eq!(socks5_request(&mut bind, Command::Bind, &ip_target(target)).0, ReplyCode::NOT_ALLOWED);
    let mut udp = connect(addr);
    socks5_login(&mut udp, None);
    let anywhere = ip_target("0.0.0.0:0".parse().unwrap());
    assert_eq!(socks5_request(&mut udp, Command::UdpAssociate, &anywhere).0, ReplyCode::NOT_ALLOWED);
    // SOCKS4's BIND counts as bind too.
    let mut socks4_bind = connect(addr);
    let SocketAddr::V4(v4) = target else { unreachable!() };
    let reply = socks4_request(&mut socks4_bind, socks4::Command::Bind, Addr::Ip(SocketAddr::V4(v4)), b"");
    assert_eq!(reply.code, socks4::ReplyCode::Rejected);
}

#[test]
fn destinations_by_name_domain_address_and_port() {
    let target = echo_server("127.0.0.1:0");
    let rules = [
        (Deny, "to .blocked.invalid"),
        (Deny, "to LocalHost port 1-1023"),
        (Deny, "to 127.0.0.0/8 port 1-9"),
        (Allow, "to *"),
    ];
    let (_proxy, addr) = proxy_with_rules(&[], &rules);
    // Refused on the name alone: reply 2, not the 4 a failed lookup would give.
    assert_eq!(connect_code(addr, None, &domain_target("ads.blocked.invalid", 80)), 2);
    assert_eq!(connect_code(addr, None, &domain_target("blocked.invalid", 80)), 2);
    assert_eq!(connect_code(addr, None, &domain_target("localhost", 22)), 2, "names ignore case");
    assert_eq!(connect_code(addr, None, &ip_target("127.0.0.1:7".parse().unwrap())), 2);
    assert_eq!(connect_code(addr, None, &domain_target("localhost", target.port())), 0);
    assert_eq!(connect_code(addr, None, &ip_target(target)), 0);
}

#[test]
fn names_are_judged_in_one_canonical_form() {
    let target = echo_server("127.0.0.1:0");
    let rules = [(Deny, "to blocked.example"), (Deny, "to localhost"), (Allow, "to *")];
    let (_proxy, addr) = proxy_with_rules(&[], &rules);
    assert_eq!(connect_code(addr, None, &domain_target("blocked.example.", 80)), 2, "a trailing dot");
    assert_eq!(connect_code(addr, None, &domain_target("localhost.", target.port())), 2);
    assert_eq!(connect_code(addr, None, &domain_target("LocalHost.", target.port())), 2);
    assert_eq!(connect_code(addr, None, &domain_target("localhost.localdomain.invalid", 80)), 4, "others pass");
}

#[test]
fn a_name_that_is_not_a_host_name_is_refused_unresolved() {
    // Each would reach the loopback echo server if it were looked up as `.localhost`
    // names are, or a resolver that decodes `\DDD` escapes saw a name no rule did.
    let target = echo_server("127.0.0.1:0");
    let (_proxy, addr) = proxy_with_rules(&[], &[(Deny, "to blocked.example"), (Allow, "to *")]);
    let long_label = format!("{}.localhost", "a".repeat(64));
    let names = ["\\098locked.example", "x\\.localhost", "a..localhost", "a b.localhost", "é.localhost", &long_label];
    for name in names {
        assert_eq!(connect_code(addr, None, &domain_target(name, target.port())), 4, "{name:?}");
        let mut bind = connect(addr);
        socks5_login(&mut bind, None);
        let code = socks5_request(&mut bind, Command::Bind, &domain_target(name, 0)).0;
        assert_eq!(code, ReplyCode::HOST_UNREACHABLE, "BIND peer {name:?}");
        let mut socks4a = connect(addr);
        let reply = socks4_request(&mut socks4a, socks4::Command::Connect, Addr::Domain(name, target.port()), b"");
        assert_eq!(reply.code, socks4::ReplyCode::Rejected, "SOCKS4a {name:?}");
    }
    let association = UdpAssociation::open(addr, None);
    t!(association.socket.set_read_timeout(Some(Duration::from_millis(300))));
    let udp_target = udp_echo_server("127.0.0.1:0");
    association.send(&domain_target("x\\.localhost", udp_target.port()), b"dropped");
    association.send(&domain_target("localhost", udp_target.port()), b"passed");
    let (_, payload) = association.recv();
    assert_eq!(payload, b"passed");
    let mut buf = [0u8; 64];
    assert!(association.socket.recv_from(&mut buf).is_err(), "the datagram to a non-host name was dropped");
}

#[test]
fn a_name_that_resolves_to_a_denied_address_is_refused() {
    let target = echo_server("127.0.0.1:0");
    let (_proxy, addr) = proxy_with_rules(&[], &[(Deny, "to 127.0.0.1")]);
    assert_eq!(connect_code(addr, None, &domain_target("localhost", target.port())), 2);
    assert_eq!(connect_code(addr, None, &ip_target(target)), 2);
}

#[test]
fn the_first_match_decides_and_no_match_means_the_opposite_of_the_last_rule() {
    let open = echo_server("127.0.0.1:0");
    let closed = echo_server("127.0.0.1:0");
    let rules = [(Allow, &*format!("to 127.0.0.1 port {}", open.port())), (Deny, "to 127.0.0.1")];
    let (_proxy, addr) = proxy_with_rules(&[], &rules);
    assert_eq!(connect_code(addr, None, &ip_target(open)), 0, "the allow comes first");
    assert_eq!(connect_code(addr, None, &ip_target(closed)), 2);
    let only = format!("to 127.0.0.1 port {}", open.port());
    let (_proxy, addr) = proxy_with_rules(&[], &[(Allow, &only)]);
    assert_eq!(connect_code(addr, None, &ip_target(closed)), 2, "the default after an allow is deny");
    let (_proxy, addr) = proxy_with_rules(&[], &[(Deny, &only)]);
    assert_eq!(connect_code(addr, None, &ip_target(closed)), 0, "the default after a deny is allow");
}

#[test]
fn a_bind_peer_the_rules_refuse_gets_the_second_reply_2() {
    let (_proxy, addr) = proxy_with_rules(&[], &[(Deny, "cmd bind to 127.0.0.3"), (Allow, "to *")]);
    // Naming the refused peer is refused at once.
    let mut named = connect(addr);
    socks5_login(&mut named, None);
    let refused = ip_target("127.0.0.3:20".parse().unwrap());
    assert_eq!(socks5_request(&mut named, Command::Bind, &refused).0, ReplyCode::NOT_ALLOWED);
    // Naming anyone: the peer that comes is judged when it comes.
    let (mut control, bound) = socks5_bind(addr, "0.0.0.0:0".parse().unwrap());
    let _peer = connect_from(IpAddr::from([127, 0, 0, 3]), bound);
    assert_eq!(read_socks5_reply(&mut control).0, ReplyCode::NOT_ALLOWED, "second reply");
}

#[test]
fn a_bind_naming_a_host_with_a_refused_address_is_refused_before_it_listens() {
    // localhost resolves to 127.0.0.1 (and maybe ::1): one refused address refuses the name.
    let (_proxy, addr) = proxy_with_rules(&[], &[(Deny, "cmd bind to 127.0.0.1"), (Allow, "to *")]);
    let mut named = connect(addr);
    socks5_login(&mut named, None);
    let code = socks5_request(&mut named, Command::Bind, &domain_target("localhost", 21)).0;
    assert_eq!(code, ReplyCode::NOT_ALLOWED, "first reply");
    // A peer the rules allow is listened for, and taken when it comes.
    let (mut control, bound) = socks5_bind(addr, "127.0.0.2:21".parse().unwrap());
    let _peer = connect_from(IpAddr::from([127, 0, 0, 2]), bound);
    assert_eq!(read_socks5_reply(&mut control).0, ReplyCode::SUCCEEDED, "second reply");
}

#[test]
fn udp_datagrams_to_a_refused_target_are_dropped_and_others_pass() {
    let open = udp_echo_server("127.0.0.1:0");
    let refused = udp_echo_server("127.0.0.1:0");
    let (_proxy, addr) = proxy_with_rules(&[], &[(Deny, &*format!("cmd udp port {}", refused.port()))]);
    let association = UdpAssociation::open(addr, None);
    t!(association.socket.set_read_timeout(Some(Duration::from_millis(300))));
    association.send(&ip_target(refused), b"dropped");
    association.send(&ip_target(open), b"passed");
    let (from, payload) = association.recv();
    assert_eq!((from, payload.as_slice()), (ip_target(open), &b"passed"[..]));
    let mut buf = [0u8; 64];
    assert!(association.socket.recv_from(&mut buf).is_err(), "nothing came back from the refused target");
}

#[test]
fn tcp_forward_clients_are_judged_by_address_at_accept() {
    let target = echo_server("127.0.0.1:0");
    let mut config = Config {
        services: vec![t!(burrowd::config::service_url::parse_service(&format!("tcp://127.0.0.1:0/{target}")))],
        ..Config::default()
    };
    config.rules = t!(Rules::load(vec![RuleSource::Flag(Deny, "from 127.0.0.5".into())]));
    let (_proxy, addr) = start(config);
    let mut refused = connect_from(IpAddr::from([127, 0, 0, 5]), addr);
    t!(refused.write_all(b"x"));
    let mut byte = [0u8; 1];
    assert!(matches!(refused.read(&mut byte), Ok(0) | Err(_)), "closed, never forwarded");
    let mut served = connect_from(IpAddr::from([127, 0, 0, 6]), addr);
    t!(served.write_all(b"y"));
    t!(served.read_exact(&mut byte));
    assert_eq!(&byte, b"y");
}

#[test]
fn udp_forward_clients_are_judged_by_address_on_their_first_datagram() {
    let target = udp_echo_server("127.0.0.1:0");
    let mut config = Config {
        services: vec![t!(burrowd::config::service_url::parse_service(&format!("udp://127.0.0.1:0/{target}")))],
        ..Config::default()
    };
    config.rules = t!(Rules::load(vec![RuleSource::Flag(Deny, "from 127.0.0.5".into())]));
    let (proxy, addr) = start(config);
    let round_trip = |from: [u8; 4]| {
        let socket = t!(std::net::UdpSocket::bind(SocketAddr::from((from, 0))));
        t!(socket.set_read_timeout(Some(Duration::from_millis(500))));
        t!(socket.send_to(b"ping", addr));
        let mut buf = [0u8; 8];
        socket.recv_from(&mut buf).is_ok_and(|(n, _)| &buf[..n] == b"ping")
    };
    assert!(!round_trip([127, 0, 0, 5]), "refused: no session, no reply");
    assert!(round_trip([127, 0, 0, 6]));
    assert_eq!(proxy.stats().refused, 1);
}
