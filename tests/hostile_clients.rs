//! Clients that try to hold the proxy without using it: silent and half-greeting sockets
//! from one address and from many, an address that wants more than its share, and UDP
//! senders on a `udp://` service. Each test asserts what a valid client sees and what the
//! process holds (threads by name, descriptors), never how long something took.
//!
//! The tests in this file run one at a time: they count the whole process's threads and
//! descriptors.

mod common;

use burrowd::Config;
use common::*;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A long handshake timeout, so that only admission can free a worker during a test.
fn limited(max_clients: usize, queue: usize) -> Config {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.max_clients = max_clients;
    config.queue = queue;
    config.handshake_timeout = Duration::from_secs(120);
    config
}

/// Opens `count` connections from `from` that send nothing or half a greeting (`05 01`),
/// as a scanner or a broken client would; they are kept open by the caller.
fn stallers(count: usize, from: impl Fn(usize) -> IpAddr, proxy: SocketAddr) -> Vec<TcpStream> {
    (0..count)
        .map(|i| {
            let mut stream = connect_from(from(i), proxy);
            if i % 2 == 1 {
                t!(stream.write_all(&[5, 1]));
            }
            stream
        })
        .collect()
}

/// Greeting, CONNECT and a one-byte echo from `from`, each read bounded by `TIMEOUT` (far
/// shorter than the handshake timeout, so a client that had to wait for it fails).
fn valid_client_is_served(from: IpAddr, proxy: SocketAddr, target: SocketAddr) {
    let mut stream = connect_from(from, proxy);
    socks5_login(&mut stream, None);
    let (code, _) = socks5_request(&mut stream, burrowd::wire::socks5::Command::Connect, &ip_target(target));
    assert_eq!(code, burrowd::wire::socks5::ReplyCode::SUCCEEDED);
    t!(stream.write_all(b"x"));
    let mut echo = [0u8; 1];
    t!(stream.read_exact(&mut echo));
    assert_eq!(&echo, b"x");
}

/// This process's threads whose name starts with `prefix` (names are cut at 15 bytes).
fn threads_named(prefix: &str) -> usize {
    let tasks = t!(std::fs::read_dir("/proc/self/task"));
    tasks
        .flatten()
        .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|name| name.starts_with(prefix)))
        .count()
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[test]
fn silent_clients_from_the_valid_clients_own_address_cannot_lock_it_out() {
    let _serial = one_at_a_time();
    let (before, workers_before) = (open_descriptors().expect("counted on Linux"), threads_named("burrowd-worker"));
    let (proxy, proxy_addr) = start(limited(8, 2));
    let target = echo_server("127.0.0.1:0");
    // Far more than the workers and the queue, and from the same address as the valid
    // client: a cap per address alone cannot tell them apart.
    let held = stallers(200, |_| loopback(1), proxy_addr);
    for _ in 0..5 {
        valid_client_is_served(loopback(1), proxy_addr, target);
    }
    assert!(threads_named("burrowd-worker") - workers_before <= 8, "workers stay within --max-clients");
    // The proxy's share of the descriptors: each live client, plus a second handle on each
    // one still in its handshake, for 8 workers and 2 queue places; ours are the 200.
    let proxy_holds = open_descriptors().expect("counted on Linux").saturating_sub(before + held.len());
    assert!(proxy_holds <= 2 * (8 + 2) + 8, "the proxy holds {proxy_holds} descriptors");
    // Each staller past the first few made room for itself, or (while many reclaimed ones
    // were still being finished) was closed at once.
    let stats = proxy.stats();
    assert!(stats.reclaimed + stats.refused >= 190 && stats.reclaimed > 0, "{stats:?}");
}

#[test]
fn silent_clients_from_many_addresses_cannot_lock_out_another() {
    let _serial = one_at_a_time();
    let workers_before = threads_named("burrowd-worker");
    let (proxy, proxy_addr) = start(limited(8, 2));
    let target = echo_server("127.0.0.1:0");
    let _held = stallers(200, |i| loopback(2 + (i % 20) as u8), proxy_addr);
    for _ in 0..5 {
        valid_client_is_served(loopback(1), proxy_addr, target);
    }
    assert!(threads_named("burrowd-worker") - workers_before <= 8, "workers stay within --max-clients");
    // Each staller past the first few made room for itself, or (while many reclaimed ones
    // were still being finished) was closed at once.
    let stats = proxy.stats();
    assert!(stats.reclaimed + stats.refused >= 190 && stats.reclaimed > 0, "{stats:?}");
}

#[test]
fn reclaimed_clients_see_a_close_and_sessions_past_the_handshake_are_kept() {
    let _serial = one_at_a_time();
    let mut config = limited(4, 0);
    config.max_clients_per_ip = Some(4);
    let (proxy, proxy_addr) = start(config);
    let target = echo_server("127.0.0.1:0");
    let mut established: Vec<_> = (0..2).map(|_| socks5_connect(proxy_addr, target)).collect();
    let mut oldest_staller = connect_from(loopback(1), proxy_addr);
    let _younger_staller = stallers(1, |_| loopback(1), proxy_addr);
    wait_until("the stallers are admitted", || proxy.stats().active == 4);

    valid_client_is_served(loopback(1), proxy_addr, target);
    assert_closed(&mut oldest_staller);
    for stream in &mut established {
        t!(stream.write_all(b"still here"));
        let mut echo = [0u8; 10];
        t!(stream.read_exact(&mut echo));
        assert_eq!(&echo, b"still here", "a relayed session is never reclaimed");
    }
    assert!(proxy.stats().reclaimed >= 1);
    assert_eq!(proxy.stats().refused, 0);
}

#[test]
fn an_address_whose_share_is_all_relaying_is_refused_by_a_close_and_others_are_served() {
    let _serial = one_at_a_time();
    let mut config = limited(8, 0);
    config.max_clients_per_ip = Some(2);
    let (proxy, proxy_addr) = start(config);
    let target = echo_server("127.0.0.1:0");
    let _established: Vec<_> = (0..2).map(|_| socks5_connect(proxy_addr, target)).collect();

    let mut over_share = connect_from(loopback(1), proxy_addr);
    assert_closed(&mut over_share);
    assert_eq!(proxy.stats().refused, 1);
    valid_client_is_served(loopback(2), proxy_addr, target);
}

/// A valid client over a slow link: every message it sends is split, and it waits `rtt`
/// before each one, as a round trip would make it. Greeting, CONNECT to `target` and a
/// one-byte echo; an error says how far it got.
fn slow_client(from: IpAddr, proxy: SocketAddr, target: SocketAddr, rtt: Duration) -> Result<(), String> {
    let SocketAddr::V4(target) = target else { panic!("an IPv4 target") };
    let mut stream = connect_from(from, proxy);
    let mut request = vec![5, 1, 0, 1];
    request.extend(target.ip().octets());
    request.extend(target.port().to_be_bytes());
    let mut exchange = |what: &str, message: &[u8], answer_len: usize| -> Result<Vec<u8>, String> {
        for piece in message.chunks(message.len().div_ceil(2)) {
            std::thread::sleep(rtt / 2);
            stream.write_all(piece).map_err(|e| format!("sending {what}: {e}"))?;
        }
        let mut answer = vec![0u8; answer_len];
        stream.read_exact(&mut answer).map_err(|e| format!("reading the answer to {what}: {e}"))?;
        Ok(answer)
    };
    let choice = exchange("the greeting", &[5, 1, 0], 2)?;
    assert_eq!(choice, [5, 0]);
    let reply = exchange("the request", &request, 10)?;
    assert_eq!(reply[..2], [5, 0], "CONNECT succeeded");
    let echo = exchange("data", b"x", 1)?;
    assert_eq!(echo, b"x");
    Ok(())
}

#[test]
fn a_slow_client_is_not_reclaimed_while_a_few_addresses_flood_silent_connections() {
    let _serial = one_at_a_time();
    // Every worker taken by the flood, no queue: each new silent connection makes room by
    // closing a client still in its handshake. The flooders are the ones holding the most.
    let (proxy, proxy_addr) = start(limited(64, 0));
    let target = echo_server("127.0.0.1:0");
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (2..6)
        .map(|last| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // Each opens one a millisecond, keeps its newest 64 open (well past its share
                // of 32), and stops after 20,000 or 30 s, whichever comes first.
                let mut open = VecDeque::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                for _ in 0..20_000 {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    open.push_back(connect_from(loopback(last), proxy_addr));
                    if open.len() > 64 {
                        open.pop_front();
                    }
                }
            })
        })
        .collect();
    wait_until("the flood holds every worker", || proxy.stats().active >= 64 && proxy.stats().reclaimed > 0);
    let outcomes: Vec<_> =
        (0..5).map(|_| slow_client(loopback(6), proxy_addr, target, Duration::from_millis(50))).collect();
    stop.store(true, Ordering::SeqCst);
    for flooder in flooders {
        flooder.join().unwrap();
    }
    let reclaimed = proxy.stats().reclaimed;
    let failed: Vec<_> = outcomes.iter().filter_map(|outcome| outcome.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of 5 slow clients failed ({reclaimed} reclaimed in all): {failed:?}", failed.len());
    assert!(reclaimed > 64, "the flood made room for itself: {reclaimed} reclaimed");
}

#[test]
fn udp_forward_sessions_are_bounded_and_never_take_socks_workers() {
    let _serial = one_at_a_time();
    let target = udp_echo_server("127.0.0.1:0");
    let mut config = limited(2, 0);
    let forward = format!("udp://127.0.0.1:0/{target}?ttl=30s");
    config.services.push(t!(burrowd::config::service_url::parse_service(&forward)));
    config.udp_max_sessions = 4;
    config.udp_max_sessions_per_ip = Some(2);
    let (proxy, socks_addr) = start(config);
    let udp_addr = proxy.local_addrs()[1];
    let sessions_before = threads_named("burrowd-udp-ses");

    // Many source ports from one address: two get sessions, the rest are dropped.
    let senders: Vec<_> = (0..10).map(|_| t!(UdpSocket::bind("127.0.0.1:0"))).collect();
    let answered = senders.iter().filter(|socket| udp_round_trip(socket, udp_addr)).count();
    assert_eq!(answered, 2, "one address gets its share of sessions");
    // Another address still gets sessions, up to the service's bound.
    let others: Vec<_> = (0..4).map(|i| t!(UdpSocket::bind(SocketAddr::new(loopback(2 + i), 0)))).collect();
    let answered = others.iter().filter(|socket| udp_round_trip(socket, udp_addr)).count();
    assert_eq!(answered, 2, "the service's bound is 4 in all");
    assert!(threads_named("burrowd-udp-ses") - sessions_before <= 4);

    // Both SOCKS workers are still free for SOCKS clients (one per address by default).
    let echo = echo_server("127.0.0.1:0");
    let first = socks5_connect(socks_addr, echo);
    valid_client_is_served(loopback(2), socks_addr, echo);
    drop(first);
}

/// Whether a datagram sent through the forward comes back (bounded wait).
fn udp_round_trip(socket: &UdpSocket, forward: SocketAddr) -> bool {
    t!(socket.set_read_timeout(Some(Duration::from_millis(500))));
    t!(socket.send_to(b"ping", forward));
    let mut buf = [0u8; 16];
    matches!(socket.recv_from(&mut buf), Ok((4, _)))
}

#[test]
fn after_churn_with_resets_and_abandoned_handshakes_every_descriptor_is_given_back() {
    let _serial = one_at_a_time();
    let target = echo_server("127.0.0.1:0");
    // Room for the four clients and the abandoned handshakes not yet noticed, so that no
    // valid client is closed to make room: this test is about what is given back.
    let mut config = limited(16, 4);
    config.max_clients_per_ip = Some(16);
    let (proxy, proxy_addr) = start(config);
    // A warm-up, so that threads and pooled buffers the churn would start exist already.
    assert_echoes(socks5_connect(proxy_addr, target), b"warm-up");
    assert!(proxy.drain(TIMEOUT));
    let before = open_descriptors().expect("counted on Linux");
    let clients: Vec<_> = (0..4)
        .map(|worker| {
            std::thread::spawn(move || {
                for i in 0..50 {
                    match (worker + i) % 10 {
                        // abandoned mid-handshake
                        0 => drop(stallers(1, |_| loopback(1), proxy_addr)),
                        // reset by the client mid-relay
                        1 => {
                            let mut stream = socks5_connect(proxy_addr, target);
                            t!(stream.write_all(b"about to reset"));
                            t!(socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)));
                        }
                        _ => assert_echoes(socks5_connect(proxy_addr, target), b"churn"),
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    // An abandoned connection may still wait in the kernel's accept queue when the last
    // client returns.
    wait_until("every session has ended", || proxy.stats().sessions == 201 && proxy.stats().active == 0);
    // The echo server's side of each connection closes on its own thread, a moment later.
    wait_until("every descriptor is given back", || open_descriptors().expect("counted on Linux") <= before);
}
