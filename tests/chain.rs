//! Upstream chains over loopback: client -> burrowd -> burrowd (-> burrowd) -> target.

mod common;

use burrowd::config::rules::{RuleSource, Rules, Verdict};
use burrowd::config::service_url;
use burrowd::wire::addr::{Addr, TargetAddr};
use burrowd::wire::socks4;
use burrowd::wire::socks5::{Command, Greeting, MethodChoice, Reply, ReplyCode, Request, method};
use common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::mpsc;
use std::thread;

/// A SOCKS5 upstream that needs `user:password`.
fn upstream_with_user(user_password: &str) -> (burrowd::Server, SocketAddr) {
    start(burrowd::Config::socks_with_users("127.0.0.1:0".parse().unwrap(), &[user_password]))
}

#[test]
fn connect_through_one_hop_without_credentials() {
    let target = echo_server("127.0.0.1:0");
    let (upstream, upstream_addr) = proxy();
    let (_front, addrs) = start_urls(&["socks5://127.0.0.1:0"], &[&format!("socks5://{upstream_addr}")]);
    assert_echoes(socks5_connect(addrs[0], target), b"via one hop");
    wait_until("the upstream served the session", || upstream.stats().sessions == 1);
}

#[test]
fn connect_and_tcp_forward_through_two_hops_with_credentials() {
    let target = echo_server("127.0.0.1:0");
    let (hop1, hop1_addr) = upstream_with_user("alice:one");
    let (hop2, hop2_addr) = upstream_with_user("bob:t%wo");
    let chain = [format!("socks5://alice:one@{hop1_addr}"), format!("socks5://bob:t%25wo@{hop2_addr}")];
    let (_front, addrs) =
        start_urls(&["socks://127.0.0.1:0", &format!("tcp://127.0.0.1:0/{target}")], &[&chain[0], &chain[1]]);
    assert_echoes(socks5_connect(addrs[0], target), b"CONNECT via two hops");
    assert_echoes(connect(addrs[1]), b"tcp:// via two hops");
    wait_until("both hops served both sessions", || hop1.stats().sessions == 2 && hop2.stats().sessions == 2);
}

#[test]
fn the_last_hops_refusal_reaches_the_client() {
    let (_upstream, upstream_addr) = proxy();
    let (_front, addrs) = start_urls(&["socks5://127.0.0.1:0"], &[&format!("socks5://{upstream_addr}")]);
    let mut client = connect(addrs[0]);
    socks5_login(&mut client, None);
    let (code, _) = socks5_request(&mut client, Command::Connect, &ip_target(closed_port()));
    assert_eq!(code, ReplyCode::CONNECTION_REFUSED);
    assert_eq!(read_to_end(&mut client), b"", "closed after the failure reply");
}

/// A wrong upstream password is burrowd's own misconfiguration, not anything about the
/// target, so the client gets 1 (general SOCKS server failure) rather than 2 (which
/// says the target is refused by a rule), and a tcp:// client sees its connection closed.
#[test]
fn a_wrong_upstream_password_is_a_general_failure() {
    let target = echo_server("127.0.0.1:0");
    let (upstream, upstream_addr) = upstream_with_user("alice:right");
    let (_front, addrs) = start_urls(
        &["socks5://127.0.0.1:0", &format!("tcp://127.0.0.1:0/{target}")],
        &[&format!("socks5://alice:wrong@{upstream_addr}")],
    );
    let mut client = connect(addrs[0]);
    socks5_login(&mut client, None);
    let (code, _) = socks5_request(&mut client, Command::Connect, &ip_target(target));
    assert_eq!(code, ReplyCode::GENERAL_FAILURE);
    assert_eq!(read_to_end(&mut client), b"");

    let mut forwarded = connect(addrs[1]);
    assert_eq!(read_to_end(&mut forwarded), b"", "tcp:// client closed");
    wait_until("the upstream logged both failed logins", || upstream.stats().sessions == 2);
}

/// `a%3Ab` is the user `a:b`, on a listener (`-L`) and on a hop (`-F`) alike.
#[test]
fn a_user_with_an_encoded_colon_logs_in_as_itself() {
    let target = echo_server("127.0.0.1:0");
    let (_listener, listener_addrs) = start_urls(&["socks5://a%3Ab:pw@127.0.0.1:0"], &[]);
    let mut client = connect(listener_addrs[0]);
    socks5_login(&mut client, Some(("a:b", "pw")));

    let mut hop_config = burrowd::Config::socks_on("127.0.0.1:0".parse().unwrap());
    let burrowd::config::ServiceSpec::Socks(spec) = &mut hop_config.services[0] else { panic!("not SOCKS") };
    t!(spec.users.add(b"a:b", b"pw"));
    let (hop, hop_addr) = start(hop_config);
    let (_front, addrs) = start_urls(&["socks5://127.0.0.1:0"], &[&format!("socks5://a%3Ab:pw@{hop_addr}")]);
    assert_echoes(socks5_connect(addrs[0], target), b"as user a:b");
    wait_until("the hop served the session", || hop.stats().sessions == 1);
}

#[test]
fn a_missing_upstream_is_a_general_failure() {
    let (_front, addrs) = start_urls(&["socks5://127.0.0.1:0"], &[&format!("socks5://{}", closed_port())]);
    let mut client = connect(addrs[0]);
    socks5_login(&mut client, None);
    let (code, _) = socks5_request(&mut client, Command::Connect, &ip_target(echo_server("127.0.0.1:0")));
    assert_eq!(code, ReplyCode::GENERAL_FAILURE);
}

/// A fake upstream that records the request it is sent and answers with `code`.
fn recording_upstream(code: ReplyCode) -> (SocketAddr, mpsc::Receiver<TargetAddr>) {
    let listener = t!(TcpListener::bind("127.0.0.1:0"));
    let addr = t!(listener.local_addr());
    let (requests, seen) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = t!(listener.accept());
        let mut buf = [0u8; 600];
        let len = read_framed(&mut stream, &mut buf, Greeting::wanted_len);
        assert!(t!(Greeting::parse(&buf[..len])).offers(method::NO_AUTH));
        t!(stream.write_all(&MethodChoice { method: method::NO_AUTH }.emit()));
        let len = read_framed(&mut stream, &mut buf, Request::wanted_len);
        let request = t!(Request::parse(&buf[..len]));
        let _ = requests.send(request.addr.to_owned());
        let len = Reply::failure(code).emit(&mut buf);
        t!(stream.write_all(&buf[..len]));
    });
    (addr, seen)
}

#[test]
fn names_go_upstream_unresolved_and_its_reply_code_passes_through() {
    let (upstream, requests) = recording_upstream(ReplyCode::NOT_ALLOWED);
    let (_front, addrs) = start_urls(&["socks5://127.0.0.1:0"], &[&format!("socks5://{upstream}")]);
    let mut client = connect(addrs[0]);
    socks5_login(&mut client, None);
    // A name no resolver here can answer (and none is asked): only the upstream sees it.
    let name = domain_target(&unresolvable_name(), 443);
    let (code, _) = socks5_request(&mut client, Command::Connect, &name);
    assert_eq!(t!(requests.recv_timeout(TIMEOUT)), name);
    assert_eq!(code, ReplyCode::NOT_ALLOWED);
}

#[test]
fn udp_associate_through_one_hop_with_credentials() {
    let (target, _) = udp_multi_echo("127.0.0.1:0", 2);
    let (upstream, upstream_addr) = upstream_with_user("carol:pw");
    let (front, addrs) = start_urls(&["socks5://127.0.0.1:0"], &[&format!("socks5://carol:pw@{upstream_addr}")]);
    let association = UdpAssociation::open(addrs[0], None);
    for request in ["by address", "by name"] {
        let to = match request {
            "by address" => ip_target(target),
            _ => domain_target("localhost", target.port()),
        };
        association.send(&to, request.as_bytes());
        for i in 0..2 {
            // However the target was named, the hop labels replies with its address.
            let (from, payload) = association.recv();
            assert!(matches!(from, TargetAddr::Ip(addr) if addr.port() == target.port()), "{from}");
            assert_eq!(payload, format!("{request}#{i}").as_bytes());
        }
    }
    drop(association);
    // Our association ending ends the one we held with the hop.
    wait_until("the front association ends", || front.stats().sessions == 1);
    wait_until("the hop's association ends", || upstream.stats().sessions == 1);
}

#[test]
fn udp_forward_through_one_hop() {
    let (target, _) = udp_multi_echo("127.0.0.1:0", 3);
    let (upstream, upstream_addr) = upstream_with_user("dave:pw");
    let (_front, addrs) =
        start_urls(&[&format!("udp://127.0.0.1:0/{target}")], &[&format!("socks5://dave:pw@{upstream_addr}")]);
    let client = udp_socket_near(addrs[0]);
    t!(client.send_to(b"hello", addrs[0]));
    let mut buf = [0u8; 64];
    for i in 0..3 {
        let (len, from) = t!(client.recv_from(&mut buf));
        assert_eq!(from, addrs[0]);
        assert_eq!(&buf[..len], format!("hello#{i}").as_bytes());
    }
    assert_eq!(upstream.stats().active, 1, "the hop holds the forwarder's association");
}

#[test]
fn udp_associate_with_a_wrong_upstream_password_is_a_general_failure() {
    let (_upstream, upstream_addr) = upstream_with_user("carol:pw");
    let (_front, addrs) = start_urls(&["socks5://127.0.0.1:0"], &[&format!("socks5://carol:nope@{upstream_addr}")]);
    let mut control = connect(addrs[0]);
    socks5_login(&mut control, None);
    let (code, _) = socks5_request(&mut control, Command::UdpAssociate, &ip_target("0.0.0.0:0".parse().unwrap()));
    assert_eq!(code, ReplyCode::GENERAL_FAILURE);
}

/// Three hops, one of them with a login: every datagram is wrapped once per hop and its
/// replies come back labelled with the target's address, however the target was named.
#[test]
fn udp_associate_through_three_hops() {
    let (target, _) = udp_multi_echo("127.0.0.1:0", 2);
    let (hop1, hop1_addr) = proxy();
    let (hop2, hop2_addr) = upstream_with_user("erin:pw");
    let (hop3, hop3_addr) = proxy();
    let chain =
        [format!("socks5://{hop1_addr}"), format!("socks5://erin:pw@{hop2_addr}"), format!("socks5://{hop3_addr}")];
    let (front, addrs) = start_urls(&["socks5://127.0.0.1:0"], &[&chain[0], &chain[1], &chain[2]]);
    let association = UdpAssociation::open(addrs[0], None);
    for request in ["by address", "by name"] {
        let to = match request {
            "by address" => ip_target(target),
            _ => domain_target("localhost", target.port()),
        };
        association.send(&to, request.as_bytes());
        for i in 0..2 {
            let (from, payload) = association.recv();
            assert_eq!(from, ip_target(target));
            assert_eq!(payload, format!("{request}#{i}").as_bytes());
        }
    }
    // Each hop holds its own association, and the first two the TCP paths to the later ones.
    let active = [hop1.stats().active, hop2.stats().active, hop3.stats().active];
    assert_eq!(active, [3, 2, 1], "sessions held by each hop");
    drop(association);
    wait_until("the front association ends", || front.stats().sessions == 1);
    wait_until("every hop's association ends", || hop1.stats().active + hop2.stats().active + hop3.stats().active == 0);
}

#[test]
fn udp_forward_through_two_hops() {
    let (target, _) = udp_multi_echo("127.0.0.1:0", 2);
    let (_hop1, hop1_addr) = proxy();
    let (_hop2, hop2_addr) = proxy();
    let (_front, addrs) = start_urls(
        &[&format!("udp://127.0.0.1:0/{target}")],
        &[&format!("socks5://{hop1_addr}"), &format!("socks5://{hop2_addr}")],
    );
    let client = udp_socket_near(addrs[0]);
    t!(client.send_to(b"hello", addrs[0]));
    let mut buf = [0u8; 64];
    for i in 0..2 {
        let (len, from) = t!(client.recv_from(&mut buf));
        assert_eq!(from, addrs[0]);
        assert_eq!(&buf[..len], format!("hello#{i}").as_bytes());
    }
}

/// A first hop that reaches the next from another host (it says so in its CONNECT reply:
/// 192.0.2.1, only bytes in a reply, never contacted) cannot send to a relay on the next
/// hop's loopback: the client gets a failure reply rather than an association whose
/// datagrams vanish.
#[test]
fn udp_through_a_hop_whose_relay_the_hop_before_cannot_reach_is_refused() {
    let (_hop2, hop2_addr) = proxy();
    let hop1 = fake_remote_hop();
    let (_front, addrs) =
        start_urls(&["socks5://127.0.0.1:0"], &[&format!("socks5://{hop1}"), &format!("socks5://{hop2_addr}")]);
    let mut control = connect(addrs[0]);
    socks5_login(&mut control, None);
    let (code, _) = socks5_request(&mut control, Command::UdpAssociate, &ip_target("0.0.0.0:0".parse().unwrap()));
    assert_eq!(code, ReplyCode::GENERAL_FAILURE);
    assert_eq!(read_to_end(&mut control), b"", "closed after the failure reply");
}

/// A SOCKS5 hop that grants UDP ASSOCIATE (with a relay that is never used) and CONNECT,
/// which it relays for real, but whose CONNECT replies say it connects out from
/// 192.0.2.1:4000, as a hop on another host would.
fn fake_remote_hop() -> SocketAddr {
    serve_tcp("127.0.0.1:0", |mut stream| {
        let mut buf = [0u8; 600];
        let len = read_framed(&mut stream, &mut buf, Greeting::wanted_len);
        assert!(t!(Greeting::parse(&buf[..len])).offers(method::NO_AUTH));
        t!(stream.write_all(&MethodChoice { method: method::NO_AUTH }.emit()));
        let len = read_framed(&mut stream, &mut buf, Request::wanted_len);
        let request = t!(Request::parse(&buf[..len]));
        let (command, target) = (request.command, request.addr.to_owned());
        let relay = t!(UdpSocket::bind("127.0.0.1:0"));
        let bound = match command {
            Command::UdpAssociate => t!(relay.local_addr()),
            _ => "192.0.2.1:4000".parse().unwrap(),
        };
        let len = Reply { code: ReplyCode::SUCCEEDED, addr: Addr::Ip(bound) }.emit(&mut buf);
        t!(stream.write_all(&buf[..len]));
        match (command, target) {
            (Command::Connect, TargetAddr::Ip(next)) => {
                let next = connect(next);
                let (mut up, mut down) = (t!(stream.try_clone()), t!(next.try_clone()));
                thread::spawn(move || drop(std::io::copy(&mut up, &mut down)));
                let _ = std::io::copy(&mut &next, &mut stream);
            }
            // Holds the association until the client closes.
            _ => drop(read_to_end(&mut stream)),
        }
    })
}

/// The CONNECT reply names where the target sees the connection come from: the last
/// hop's outbound socket, not ours.
#[test]
fn a_chained_connect_replies_with_the_last_hops_address() {
    let target = serve_tcp("127.0.0.1:0", |mut stream| {
        let seen = t!(stream.peer_addr()).to_string();
        let _ = stream.write_all(seen.as_bytes());
    });
    let (_hop1, hop1_addr) = proxy();
    let (_hop2, hop2_addr) = proxy();
    let (_front, addrs) =
        start_urls(&["socks5://127.0.0.1:0"], &[&format!("socks5://{hop1_addr}"), &format!("socks5://{hop2_addr}")]);
    let mut client = connect(addrs[0]);
    socks5_login(&mut client, None);
    let (code, bound) = socks5_request(&mut client, Command::Connect, &ip_target(target));
    assert_eq!(code, ReplyCode::SUCCEEDED);
    let seen = String::from_utf8(read_to_end(&mut client)).unwrap();
    assert_eq!(bound.to_string(), seen, "the reply names the address the target saw");
}

/// BIND through two hops: the last hop listens and announces where, the peer connects
/// there, and its data reaches the client through the chain; nothing listens here.
#[test]
fn bind_goes_through_the_chain() {
    let (_hop1, hop1_addr) = proxy();
    let (hop2, hop2_addr) = proxy();
    let (front, addrs) =
        start_urls(&["socks://127.0.0.1:0"], &[&format!("socks5://{hop1_addr}"), &format!("socks5://{hop2_addr}")]);
    let (mut control, bound) = socks5_bind(addrs[0], "127.0.0.1:0".parse().unwrap());
    assert_eq!(hop2.stats().active, 1, "the last hop serves the BIND");
    assert_eq!(front.stats().active, 1);
    let mut peer = connect(bound);
    let (code, announced) = read_socks5_reply(&mut control);
    assert_eq!(code, ReplyCode::SUCCEEDED, "second BIND reply");
    assert_eq!(announced, ip_target(t!(peer.local_addr())), "the second reply names the peer");
    assert_carries(&peer, &control, b"from the peer");
    assert_carries(&control, &peer, b"from the client");
    assert_half_close(&mut peer, &mut control);

    // SOCKS4 too.
    let mut control = connect(addrs[0]);
    let first = socks4_request(&mut control, socks4::Command::Bind, Addr::Ip("127.0.0.1:0".parse().unwrap()), b"");
    assert_eq!(first.code, socks4::ReplyCode::Granted);
    let peer = connect(SocketAddr::V4(first.addr));
    let second = read_socks4_reply(&mut control);
    assert_eq!(second.code, socks4::ReplyCode::Granted);
    assert_eq!(SocketAddr::V4(second.addr), t!(peer.local_addr()));
    assert_carries(&peer, &control, b"SOCKS4 BIND via two hops");
}

/// The peer a BIND names goes to the last hop unresolved, and its refusal reaches the
/// client; no name is looked up here.
#[test]
fn bind_through_the_chain_sends_the_name_upstream() {
    let (upstream, requests) = recording_upstream(ReplyCode::NOT_ALLOWED);
    let (_front, addrs) = start_urls(&["socks5://127.0.0.1:0"], &[&format!("socks5://{upstream}")]);
    let mut client = connect(addrs[0]);
    socks5_login(&mut client, None);
    let name = domain_target(&unresolvable_name(), 21);
    let (code, _) = socks5_request(&mut client, Command::Bind, &name);
    assert_eq!(t!(requests.recv_timeout(TIMEOUT)), name);
    assert_eq!(code, ReplyCode::NOT_ALLOWED);
}

#[test]
fn socks4a_connect_goes_through_the_chain_too() {
    let target = echo_server("127.0.0.1:0");
    let (upstream, upstream_addr) = proxy();
    let (_front, addrs) = start_urls(&["socks://127.0.0.1:0"], &[&format!("socks5://{upstream_addr}")]);
    let mut client = connect(addrs[0]);
    let reply = socks4_request(&mut client, socks4::Command::Connect, Addr::Domain("localhost", target.port()), b"");
    assert_eq!(reply.code, socks4::ReplyCode::Granted);
    assert_echoes(client, b"SOCKS4a via one hop");
    wait_until("the upstream served the session", || upstream.stats().sessions == 1);
}

/// A front with two hops and `rules`: its SOCKS service's address, and the hops.
fn front_with_rules(rules: &[(Verdict, &str)]) -> (burrowd::Server, SocketAddr, [burrowd::Server; 2]) {
    let (hop1, hop1_addr) = proxy();
    let (hop2, hop2_addr) = proxy();
    let config = burrowd::Config {
        services: vec![t!(service_url::parse_service("socks://127.0.0.1:0"))],
        chain: [hop1_addr, hop2_addr]
            .iter()
            .map(|hop| t!(service_url::parse_hop(&format!("socks5://{hop}"))))
            .collect(),
        rules: t!(Rules::load(
            rules.iter().map(|(verdict, text)| RuleSource::Flag(*verdict, (*text).into())).collect()
        )),
        ..burrowd::Config::default()
    };
    let (front, addr) = start(config);
    (front, addr, [hop1, hop2])
}

/// Names go upstream unresolved, so a rule on addresses cannot judge them here: one that
/// stands before the deciding rule refuses the name (reply 2), never lets it through.
#[test]
fn a_name_an_address_rule_cannot_judge_before_it_goes_upstream_is_refused() {
    let target = echo_server("127.0.0.1:0");
    // Only a rule, never a destination: nothing is sent to 192.0.2.0/24.
    let (_front, addr, hops) = front_with_rules(&[(Verdict::Allow, "to 192.0.2.0/24")]);
    let code = |command, target: &TargetAddr| {
        let mut client = connect(addr);
        socks5_login(&mut client, None);
        socks5_request(&mut client, command, target).0
    };
    assert_eq!(code(Command::Connect, &ip_target(target)), ReplyCode::NOT_ALLOWED, "an address is judged");
    assert_eq!(code(Command::Connect, &domain_target("localhost", target.port())), ReplyCode::NOT_ALLOWED);
    assert_eq!(code(Command::Bind, &domain_target("localhost", 21)), ReplyCode::NOT_ALLOWED);
    let mut socks4a = connect(addr);
    let reply = socks4_request(&mut socks4a, socks4::Command::Connect, Addr::Domain("localhost", target.port()), b"");
    assert_eq!(reply.code, socks4::ReplyCode::Rejected);
    // A datagram to the name is dropped too.
    let udp_target = udp_echo_server("127.0.0.1:0");
    let association = UdpAssociation::open(addr, None);
    t!(association.socket.set_read_timeout(Some(std::time::Duration::from_millis(500))));
    association.send(&domain_target("localhost", udp_target.port()), b"dropped");
    let mut buf = [0u8; 64];
    assert!(association.socket.recv_from(&mut buf).is_err(), "the datagram went nowhere");
    assert!(hops.iter().all(|hop| hop.stats().sessions <= 1), "at most the UDP association reached the hops");
    assert_eq!(hops[1].stats().bytes_up, 0, "nothing was relayed past the last hop");
}

/// A name rule decides a name without its address, so the name goes upstream.
#[test]
fn a_name_a_name_rule_decides_goes_upstream() {
    let target = echo_server("127.0.0.1:0");
    let (_front, addr, _hops) = front_with_rules(&[(Verdict::Allow, "to localhost")]);
    let mut client = connect(addr);
    socks5_login(&mut client, None);
    assert_eq!(
        socks5_request(&mut client, Command::Connect, &domain_target("localhost", target.port())).0,
        ReplyCode::SUCCEEDED
    );
    assert_echoes(client, b"decided by its name");
}
