//! SOCKS5 negotiation over real sockets: methods, login, every locally producible reply
//! code, and requests however the client frames them.

mod common;

use burrowd::Config;
use burrowd::wire::addr::TargetAddr;
use burrowd::wire::socks5::{Command, ReplyCode};
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

fn users_proxy() -> (burrowd::Server, SocketAddr) {
    start(Config::socks_with_users("127.0.0.1:0".parse().unwrap(), &["alice:wonder land"]))
}

#[test]
fn connect_succeeds_and_reply_carries_the_outbound_address() {
    let (_proxy, proxy_addr) = proxy();
    // the target tells us which address the proxy's connection came from
    let (seen_tx, seen_rx) = mpsc::channel();
    let target = serve_tcp("127.0.0.1:0", move |mut stream| {
        seen_tx.send(stream.peer_addr().unwrap()).unwrap();
        stream.write_all(b"hello").unwrap();
    });
    let mut client = connect(proxy_addr);
    socks5_login(&mut client, None);
    let (code, bound) = socks5_request(&mut client, Command::Connect, &ip_target(target));
    assert_eq!(code, ReplyCode::SUCCEEDED);
    assert_eq!(bound, TargetAddr::Ip(t!(seen_rx.recv_timeout(TIMEOUT))), "BND is the outbound socket's address");
    assert_eq!(read_to_end(&mut client), b"hello");
}

#[test]
fn connect_by_domain_name_is_resolved_by_the_proxy() {
    let (_proxy, proxy_addr) = proxy();
    let target = echo_server("127.0.0.1:0");
    let mut client = connect(proxy_addr);
    socks5_login(&mut client, None);
    let (code, _) = socks5_request(&mut client, Command::Connect, &domain_target("localhost", target.port()));
    assert_eq!(code, ReplyCode::SUCCEEDED);
    t!(client.write_all(b"ping"));
    let mut echo = [0u8; 4];
    t!(client.read_exact(&mut echo));
    assert_eq!(&echo, b"ping");
}

#[test]
fn ipv6_listener_and_ipv6_target() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    drop(probe);
    let (_proxy, proxy_addr) = start(Config::socks_on("[::1]:0".parse().unwrap()));
    let target = echo_server("[::1]:0");
    let mut client = connect(proxy_addr);
    socks5_login(&mut client, None);
    let (code, bound) = socks5_request(&mut client, Command::Connect, &ip_target(target));
    assert_eq!(code, ReplyCode::SUCCEEDED);
    assert!(matches!(bound, TargetAddr::Ip(SocketAddr::V6(_))), "{bound:?}");
    t!(client.write_all(b"six"));
    let mut echo = [0u8; 3];
    t!(client.read_exact(&mut echo));
    assert_eq!(&echo, b"six");
}

#[test]
fn refused_target_gets_code_5_and_a_close() {
    let (_proxy, proxy_addr) = proxy();
    let mut client = connect(proxy_addr);
    socks5_login(&mut client, None);
    let (code, bound) = socks5_request(&mut client, Command::Connect, &ip_target(closed_port()));
    assert_eq!(code, ReplyCode::CONNECTION_REFUSED);
    assert_eq!(bound, TargetAddr::Ip("0.0.0.0:0".parse().unwrap()), "failure replies are well-formed");
    assert_closed(&mut client);
}

#[test]
fn unresolvable_name_gets_code_4() {
    let (_proxy, proxy_addr) = proxy();
    let mut client = connect(proxy_addr);
    socks5_login(&mut client, None);
    let (code, _) = socks5_request(&mut client, Command::Connect, &domain_target(&unresolvable_name(), 80));
    assert_eq!(code, ReplyCode::HOST_UNREACHABLE);
    assert_closed(&mut client);
}

#[test]
fn unknown_command_gets_code_7() {
    let (_proxy, proxy_addr) = proxy();
    let mut client = connect(proxy_addr);
    socks5_login(&mut client, None);
    t!(client.write_all(&[5, 0x09, 0, 1, 127, 0, 0, 1, 0, 80]));
    let (code, _) = read_socks5_reply(&mut client);
    assert_eq!(code, ReplyCode::COMMAND_NOT_SUPPORTED);
    assert_closed(&mut client);
}

#[test]
fn a_client_dribbling_after_a_failure_reply_is_still_closed_within_10_seconds() {
    let (proxy, proxy_addr) = proxy();
    let mut client = connect(proxy_addr);
    socks5_login(&mut client, None);
    t!(client.write_all(&[5, 0x09, 0, 1, 127, 0, 0, 1, 0, 80]));
    let (code, _) = read_socks5_reply(&mut client);
    assert_eq!(code, ReplyCode::COMMAND_NOT_SUPPORTED);
    // One byte every 100 ms keeps each of the server's reads short of its timeout; the
    // server must still let go of the session (PROTOCOL.md: close within 10 s).
    for _ in 0..100 {
        if proxy.stats().active == 0 {
            return;
        }
        // A write fails only once the server has closed the socket for good.
        let _ = client.write_all(b"x");
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the session was still open after 10 s of a byte every 100 ms");
}

#[test]
fn unknown_address_type_gets_code_8() {
    let (_proxy, proxy_addr) = proxy();
    let mut client = connect(proxy_addr);
    socks5_login(&mut client, None);
    t!(client.write_all(&[5, 1, 0, 0x07, 127, 0, 0, 1, 0, 80]));
    let (code, _) = read_socks5_reply(&mut client);
    assert_eq!(code, ReplyCode::ADDRESS_TYPE_NOT_SUPPORTED);
    assert_closed(&mut client);
}

#[test]
fn zero_length_domain_gets_a_general_failure() {
    let (_proxy, proxy_addr) = proxy();
    let mut client = connect(proxy_addr);
    socks5_login(&mut client, None);
    t!(client.write_all(&[5, 1, 0, 3, 0, 0, 80]));
    let (code, _) = read_socks5_reply(&mut client);
    assert_eq!(code, ReplyCode::GENERAL_FAILURE);
    assert_closed(&mut client);
}

#[test]
fn login_with_the_right_password_connects() {
    let (_proxy, proxy_addr) = users_proxy();
    let target = echo_server("127.0.0.1:0");
    let mut client = connect(proxy_addr);
    socks5_login(&mut client, Some(("alice", "wonder land")));
    let (code, _) = socks5_request(&mut client, Command::Connect, &ip_target(target));
    assert_eq!(code, ReplyCode::SUCCEEDED);
}

#[test]
fn wrong_password_gets_failure_status_and_a_close() {
    let (_proxy, proxy_addr) = users_proxy();
    let mut client = connect(proxy_addr);
    t!(client.write_all(&[5, 1, 2]));
    let mut choice = [0u8; 2];
    t!(client.read_exact(&mut choice));
    assert_eq!(choice, [5, 2]);
    t!(client.write_all(&[1, 5, b'a', b'l', b'i', b'c', b'e', 4, b'n', b'o', b'p', b'e']));
    let mut status = [0u8; 2];
    t!(client.read_exact(&mut status));
    assert_eq!(status[0], 1);
    assert_ne!(status[1], 0, "a failed login must not report success");
    assert_closed(&mut client);
}

#[test]
fn no_acceptable_method_gets_ff_and_a_close() {
    // users configured, client offers only "no authentication"
    let (_proxy, proxy_addr) = users_proxy();
    let mut client = connect(proxy_addr);
    t!(client.write_all(&[5, 1, 0]));
    let mut choice = [0u8; 2];
    t!(client.read_exact(&mut choice));
    assert_eq!(choice, [5, 0xff]);
    assert_closed(&mut client);

    // no users, client offers only username/password
    let (_proxy, proxy_addr) = proxy();
    let mut client = connect(proxy_addr);
    t!(client.write_all(&[5, 1, 2]));
    t!(client.read_exact(&mut choice));
    assert_eq!(choice, [5, 0xff]);
    assert_closed(&mut client);
}

#[test]
fn a_request_written_one_byte_at_a_time_is_understood() {
    let (_proxy, proxy_addr) = users_proxy();
    let target = echo_server("127.0.0.1:0");
    let mut client = connect(proxy_addr);
    t!(client.set_nodelay(true));
    let port = target.port().to_be_bytes();
    let greeting = [5u8, 1, 2];
    let login =
        [1u8, 5, b'a', b'l', b'i', b'c', b'e', 11, b'w', b'o', b'n', b'd', b'e', b'r', b' ', b'l', b'a', b'n', b'd'];
    let request = [5u8, 1, 0, 3, 9, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't', port[0], port[1]];
    let dribble = |client: &mut TcpStream, bytes: &[u8]| {
        for byte in bytes {
            t!(client.write_all(&[*byte]));
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    dribble(&mut client, &greeting);
    let mut choice = [0u8; 2];
    t!(client.read_exact(&mut choice));
    assert_eq!(choice, [5, 2]);
    dribble(&mut client, &login);
    let mut status = [0u8; 2];
    t!(client.read_exact(&mut status));
    assert_eq!(status, [1, 0]);
    dribble(&mut client, &request);
    let (code, _) = read_socks5_reply(&mut client);
    assert_eq!(code, ReplyCode::SUCCEEDED);
}

#[test]
fn data_pipelined_behind_the_request_reaches_the_target_untouched() {
    let (_proxy, proxy_addr) = proxy();
    let target = echo_server("127.0.0.1:0");
    let mut client = connect(proxy_addr);
    // greeting, request and payload in one write, as an optimistic client sends them
    let port = target.port().to_be_bytes();
    let mut all = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, port[0], port[1]];
    all.extend_from_slice(b"early bytes right behind the request");
    t!(client.write_all(&all));
    let mut choice = [0u8; 2];
    t!(client.read_exact(&mut choice));
    assert_eq!(choice, [5, 0]);
    let (code, _) = read_socks5_reply(&mut client);
    assert_eq!(code, ReplyCode::SUCCEEDED);
    t!(client.shutdown(std::net::Shutdown::Write));
    assert_eq!(read_to_end(&mut client), b"early bytes right behind the request");
}

#[test]
fn a_client_that_is_not_socks_is_closed_without_a_reply() {
    // With HTTP on (the default), this is an HTTP request: see http_proxy.rs.
    let (_proxy, proxy_addr) = start(without_http(Config::socks_on("127.0.0.1:0".parse().unwrap())));
    let mut client = connect(proxy_addr);
    t!(client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_closed(&mut client);
}
