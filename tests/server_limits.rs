//! The worker pool under load and abuse: many clients at once, a client that stalls its
//! handshake, and a pool that is full.

mod common;

use burrowd::Config;
use common::*;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

fn limited(max_clients: usize, queue: usize, handshake_timeout: Duration) -> Config {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.max_clients = max_clients;
    config.queue = queue;
    config.handshake_timeout = handshake_timeout;
    config
}

#[test]
fn a_hundred_concurrent_sessions_each_get_their_own_bytes() {
    let (proxy, proxy_addr) = proxy();
    let target = echo_server("127.0.0.1:0");
    let clients: Vec<_> = (0..100u32)
        .map(|i| {
            thread::spawn(move || {
                let mut stream = socks5_connect(proxy_addr, target);
                let message: Vec<u8> = format!("client {i} ").repeat(1000).into_bytes();
                stream.write_all(&message).unwrap();
                stream.shutdown(Shutdown::Write).unwrap();
                assert_eq!(read_to_end(&mut stream), message, "client {i}");
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert!(proxy.drain(TIMEOUT), "every session ended");
    assert_eq!(proxy.stats().sessions, 100);
}

#[test]
fn a_stalled_handshake_is_cut_at_the_timeout_and_its_worker_freed() {
    // The waiting client's own handshake runs under the same timeout once it has the
    // worker: 1 s leaves it room on a loaded machine.
    let (_proxy, proxy_addr) = start(limited(1, 4, Duration::from_secs(1)));
    let target = echo_server("127.0.0.1:0");
    let mut staller = connect(proxy_addr);
    t!(staller.write_all(&[5])); // half a greeting, then nothing
    thread::sleep(Duration::from_millis(50));
    // the only worker is held by the staller; this client waits in the queue...
    let next = thread::spawn(move || {
        let mut stream = socks5_connect(proxy_addr, target);
        stream.write_all(b"served").unwrap();
        let mut echo = [0u8; 6];
        stream.read_exact(&mut echo).unwrap();
        echo
    });
    // ...until the staller is cut off, which frees the worker for it
    assert_closed(&mut staller);
    assert_eq!(&next.join().unwrap(), b"served");
}

#[test]
fn a_full_pool_refuses_rather_than_hangs_and_recovers() {
    let (proxy, proxy_addr) = start(limited(1, 0, Duration::from_secs(10)));
    let target = echo_server("127.0.0.1:0");
    let mut occupant = socks5_connect(proxy_addr, target);

    let mut refused = connect(proxy_addr);
    assert_closed(&mut refused);
    assert_eq!(proxy.stats().refused, 1);

    t!(occupant.write_all(b"still served"));
    let mut echo = [0u8; 12];
    t!(occupant.read_exact(&mut echo));
    assert_eq!(&echo, b"still served");
    drop(occupant);

    // once the occupant is gone the worker serves the next client
    assert!(proxy.drain(TIMEOUT));
    let mut later = socks5_connect(proxy_addr, target);
    t!(later.write_all(b"ok"));
    let mut two = [0u8; 2];
    t!(later.read_exact(&mut two));
    assert_eq!(&two, b"ok");
}

#[test]
fn a_queued_client_no_worker_takes_within_the_handshake_timeout_is_closed_and_counted() {
    let mut config = limited(1, 1, Duration::from_millis(500));
    config.max_clients_per_ip = Some(2);
    config.status = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, proxy_addr) = start(config);
    let target = echo_server("127.0.0.1:0");
    // The only worker relays: it is never reclaimed, so the next client waits in the queue.
    let occupant = socks5_connect(proxy_addr, target);
    let mut queued = connect(proxy_addr);
    t!(queued.write_all(&[5, 1, 0]));
    // Closed at the end of its wait, well before this read's own timeout.
    assert_closed(&mut queued);
    wait_until("it is counted as refused", || (proxy.stats().refused, proxy.stats().active) == (1, 1));
    let mut status = connect(proxy.status_addr().unwrap());
    t!(status.write_all(b"GET /metrics HTTP/1.1\r\n\r\n"));
    let metrics = String::from_utf8_lossy(&read_to_end(&mut status)).into_owned();
    assert!(metrics.contains("burrowd_refusals_total{reason=\"queue_timeout\"} 1\n"), "{metrics}");

    assert_echoes(occupant, b"still served");
    assert!(proxy.drain(TIMEOUT));
    assert_echoes(socks5_connect(proxy_addr, target), b"the queue is open again");
}

#[test]
fn counts_too_large_to_add_up_start_a_server_that_serves() {
    let mut config = limited(usize::MAX, usize::MAX, Duration::from_secs(10));
    config.max_clients_per_ip = Some(usize::MAX);
    config.udp_max_sessions = usize::MAX;
    let (_proxy, proxy_addr) = start(config);
    let target = echo_server("127.0.0.1:0");
    assert_echoes(socks5_connect(proxy_addr, target), b"no overflow");
}
