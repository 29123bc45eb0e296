//! `tcp://` port forwarding over loopback: bulk transfer, half-close, unreachable target.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;

const BULK: usize = 64 * 1024 * 1024;

#[test]
fn upload_64_mib_then_client_half_close() {
    // The target hashes everything until the client's FIN, then answers with the hash:
    // the answer can only arrive if the FIN was carried and the other direction stayed open.
    let target = serve_tcp("127.0.0.1:0", |mut stream| {
        let (digest, len) = hash_to_end(&mut stream);
        t!(stream.write_all(&digest));
        t!(stream.write_all(&len.to_be_bytes()));
    });
    let (_server, addrs) = start_urls(&[&format!("tcp://127.0.0.1:0/{target}")], &[]);
    let mut client = connect(addrs[0]);
    let sent = send_pseudo_random(&mut client, 1, BULK);
    t!(client.shutdown(Shutdown::Write));
    let answer = read_to_end(&mut client);
    assert_eq!(answer.len(), 40, "hash and length, then EOF");
    assert_eq!(&answer[..32], &sent, "SHA-256 of what the target received");
    assert_eq!(u64::from_be_bytes(answer[32..].try_into().unwrap()), BULK as u64);
}

#[test]
fn download_64_mib_then_target_half_close() {
    // The target sends, then FIN; the client, having seen EOF, still writes, and the
    // target must receive that.
    let (heard_tx, heard) = mpsc::channel();
    let target = serve_tcp("127.0.0.1:0", move |mut stream| {
        let digest = send_pseudo_random(&mut stream, 2, BULK);
        t!(stream.shutdown(Shutdown::Write));
        let after = read_to_end(&mut stream);
        let _ = heard_tx.send((digest, after));
    });
    let (_server, addrs) = start_urls(&[&format!("tcp://127.0.0.1:0/{target}")], &[]);
    let mut client = connect(addrs[0]);
    let (received, len) = hash_to_end(&mut client);
    t!(client.write_all(b"still here"));
    t!(client.shutdown(Shutdown::Write));
    let (sent, after) = t!(heard.recv_timeout(TIMEOUT));
    assert_eq!((received, len), (sent, BULK as u64));
    assert_eq!(after, b"still here");
}

#[test]
fn forwards_to_a_domain_target_over_ipv6_listener() {
    let target = echo_server("127.0.0.1:0");
    // "localhost" may resolve to ::1 first; every address is tried in turn.
    let (_server, addrs) = start_urls(&[&format!("tcp://[::1]:0/localhost:{}", target.port())], &[]);
    assert!(addrs[0].is_ipv6());
    let mut client = connect(addrs[0]);
    t!(client.write_all(b"ping"));
    t!(client.shutdown(Shutdown::Write));
    assert_eq!(read_to_end(&mut client), b"ping");
}

#[test]
fn unreachable_target_closes_the_client_and_the_server_goes_on() {
    let echo = echo_server("127.0.0.1:0");
    let (server, addrs) =
        start_urls(&[&format!("tcp://127.0.0.1:0/{}", closed_port()), &format!("tcp://127.0.0.1:0/{echo}")], &[]);
    let mut client = connect(addrs[0]);
    t!(client.write_all(b"anyone there?"));
    let mut buf = [0u8; 16];
    // A clean FIN (read returns 0), not a reset over the bytes already sent.
    assert_eq!(t!(client.read(&mut buf)), 0);
    wait_until("the failed session is counted out", || server.stats().sessions == 1);

    let mut other = connect(addrs[1]);
    t!(other.write_all(b"fine"));
    t!(other.shutdown(Shutdown::Write));
    assert_eq!(read_to_end(&mut other), b"fine");
}
