//! The status listener read by a plain HTTP client while sessions of each kind are open:
//! every TCP leg in `/sessions` is one `ss -tn` shows, and every connected socket of the
//! proxy that `ss` shows is in the table; `/metrics` counts them.

mod common;

use burrowd::Config;
use burrowd::wire::socks5::{Command, ReplyCode};
use common::*;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command as Process;
use std::time::Duration;

/// Sends `request` raw and returns the whole response.
fn http(status: SocketAddr, request: &str) -> String {
    let mut stream = connect(status);
    t!(stream.write_all(request.as_bytes()));
    String::from_utf8_lossy(&read_to_end(&mut stream)).into_owned()
}

fn get(status: SocketAddr, path: &str) -> String {
    let response = http(status, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("Connection: close\r\n"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The (local, peer) pairs of every TCP connection `ss -tn` shows, or `None` without `ss`.
fn ss_connections() -> Option<HashSet<(SocketAddr, SocketAddr)>> {
    let output = Process::new("ss").args(["-tnH"]).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let pairs = text
        .lines()
        .filter_map(|line| {
            let columns: Vec<_> = line.split_whitespace().collect();
            let (local, peer) = (columns.get(3)?, columns.get(4)?);
            Some((local.replace(['[', ']'], "").parse().ok().or_else(|| local.parse().ok())?, peer.parse().ok()?))
        })
        .collect();
    Some(pairs)
}

#[test]
fn sessions_of_every_kind_match_ss_line_for_line_and_metrics_count_them() {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.status = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, proxy_addr) = start(config);
    let status = proxy.status_addr().expect("--status listens");
    let target = serve_tcp("127.0.0.1:0", |mut stream| {
        // Echoes, and stays open after the client's FIN: a half-closed session.
        let mut buf = [0u8; 64];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 || stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        std::thread::sleep(TIMEOUT);
    });

    let relaying = socks5_connect(proxy_addr, target);
    let half_closed = socks5_connect(proxy_addr, target);
    t!(half_closed.shutdown(Shutdown::Write));
    let (_bind_control, _) = socks5_bind(proxy_addr, "0.0.0.0:0".parse().unwrap());
    let association = UdpAssociation::open(proxy_addr, None);
    let silent = connect(proxy_addr);
    wait_until("every session is listed", || get(status, "/sessions").lines().count() == 6);
    wait_until("the half-close reached the relay", || get(status, "/sessions").contains("half-closed(client)"));
    let relaying_client = t!(relaying.local_addr()).to_string();
    wait_until("the relay shows", || get(status, "/sessions").contains(&format!("relay {relaying_client}")));

    let table = get(status, "/sessions");
    let rows: Vec<Vec<&str>> = table.lines().skip(1).map(|line| line.split(' ').collect()).collect();
    let state_of = |client: SocketAddr| {
        let row = rows.iter().find(|row| row[2] == client.to_string()).unwrap_or_else(|| panic!("{client}: {table}"));
        row[1].to_owned()
    };
    assert_eq!(state_of(t!(relaying.local_addr())), "relay");
    assert_eq!(state_of(t!(half_closed.local_addr())), "half-closed(client)");
    assert_eq!(state_of(t!(association.control.local_addr())), "udp");
    assert_eq!(state_of(t!(silent.local_addr())), "handshake");
    assert!(rows.iter().any(|row| row[1] == "bind-waiting"), "{table}");

    // Every leg in the table is a connection ss shows, and every connection of the proxy's
    // that ss shows (its accepted clients, its outbound legs to the target) is in the table.
    let Some(connections) = ss_connections() else {
        println!("skipped the comparison with ss: ss is not installed");
        return;
    };
    let mut legs = HashSet::new();
    for row in &rows {
        legs.insert((row[3].parse::<SocketAddr>().unwrap(), row[2].parse().unwrap()));
        if row[7] != "-" {
            legs.insert((row[7].parse().unwrap(), row[8].parse().unwrap()));
        }
    }
    for leg in &legs {
        assert!(connections.contains(leg), "{leg:?} is in the table but not in ss: {table}");
    }
    let proxys: HashSet<_> =
        connections.iter().filter(|(local, peer)| *local == proxy_addr || *peer == target).copied().collect();
    assert_eq!(proxys, legs, "ss and the table list the same connections: {table}");

    let metrics = get(status, "/metrics");
    let value = |sample: &str| {
        let line =
            metrics.lines().find(|line| line.starts_with(sample)).unwrap_or_else(|| panic!("{sample} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    let service = format!("service=\"{proxy_addr}\"");
    assert_eq!(value(&format!("burrowd_sessions_active{{{service},command=\"CONNECT\"}}")), 2);
    assert_eq!(value(&format!("burrowd_sessions_active{{{service},command=\"BIND\"}}")), 1);
    assert_eq!(value(&format!("burrowd_sessions_active{{{service},command=\"UDP-ASSOCIATE\"}}")), 1);
    assert_eq!(value(&format!("burrowd_sessions_active{{{service},command=\"handshake\"}}")), 1);
    assert_eq!(value("burrowd_workers_busy"), 5);
    assert!(value("burrowd_descriptors_open") > 0 && value("burrowd_descriptors_limit") > 0);
    drop((relaying, half_closed, association, silent));
}

#[test]
fn replies_refusals_and_endings_are_counted() {
    let mut config = Config::socks_with_users("127.0.0.1:0".parse().unwrap(), &["alice:pw"]);
    config.status = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, proxy_addr) = start(config);
    let status = proxy.status_addr().unwrap();
    let target = echo_server("127.0.0.1:0");
    let mut served = connect(proxy_addr);
    socks5_login(&mut served, Some(("alice", "pw")));
    assert_eq!(socks5_request(&mut served, Command::Connect, &ip_target(target)).0, ReplyCode::SUCCEEDED);
    assert_echoes(served, b"counted");
    let mut refused = connect(proxy_addr);
    socks5_login(&mut refused, Some(("alice", "pw")));
    assert_eq!(socks5_request(&mut refused, Command::Connect, &ip_target(closed_port())).0.0, 5);
    let mut wrong = connect(proxy_addr);
    t!(wrong.write_all(&[5, 1, 2, 1, 5, b'a', b'l', b'i', b'c', b'e', 2, b'n', b'o']));
    let _ = read_to_end(&mut wrong);
    drop(refused);
    wait_until("every session ended", || proxy.stats().sessions == 3);

    let metrics = get(status, "/metrics");
    for sample in [
        "burrowd_socks_replies_total{version=\"5\",code=\"0\"} 1",
        "burrowd_socks_replies_total{version=\"5\",code=\"5\"} 1",
        "burrowd_sessions_total{outcome=\"closed\"} 1",
        "burrowd_sessions_total{outcome=\"failure_reply\"} 1",
        "burrowd_sessions_total{outcome=\"login_failed\"} 1",
        "burrowd_login_failures_total 1",
        "burrowd_bytes_total{direction=\"up\"} 7",
    ] {
        assert!(metrics.lines().any(|line| line == sample), "{sample} missing from:\n{metrics}");
    }
}

#[test]
fn the_status_listener_answers_only_get_and_head_within_bounds() {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.status = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, _) = start(config);
    let status = proxy.status_addr().unwrap();
    let head = http(status, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
    assert!(!head.contains("Content-Length: 0\r\n"), "HEAD tells the length GET would send: {head}");
    assert!(http(status, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(http(status, "GET /nothing HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(http(status, "hello\r\n\r\n").starts_with("HTTP/1.1 400 "));
    let long = format!("GET /metrics HTTP/1.1\r\nX-Padding: {}\r\n\r\n", "a".repeat(10_000));
    assert!(http(status, &long).starts_with("HTTP/1.1 431 "));
    // A client that sends nothing is cut off, and the next is answered.
    let _silent = connect(status);
    assert!(get(status, "/sessions").starts_with("id state client"));
}

/// Whether the server has closed `stream` (a FIN or a reset is waiting), without waiting.
fn closed_by_server(stream: &TcpStream) -> bool {
    t!(stream.set_nonblocking(true));
    let closed = match stream.peek(&mut [0u8; 1]) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    t!(stream.set_nonblocking(false));
    closed
}

#[test]
fn idle_connections_do_not_delay_another_clients_answer() {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.status = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, _) = start(config);
    let status = proxy.status_addr().unwrap();
    let idle: Vec<TcpStream> = (0..6).map(|_| connect(status)).collect();
    assert!(get(status, "/metrics").contains("burrowd_sessions_total"));
    // Served one at a time, the answer would have come only after each idle connection had
    // been given its whole read limit and closed.
    for (i, stream) in idle.iter().enumerate() {
        assert!(!closed_by_server(stream), "idle connection {i} was closed before the answer came");
    }
}

#[test]
fn past_eight_at_once_the_next_connection_waits_for_a_place_and_is_answered() {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.status = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, _) = start(config);
    let status = proxy.status_addr().unwrap();
    let idle: Vec<TcpStream> = (0..8).map(|_| connect(status)).collect();
    // Every place is held by a connection that sends nothing; the ninth is answered once an
    // idle one has been cut off at its read limit, not before and not never.
    assert!(get(status, "/sessions").starts_with("id state client"));
    assert!(idle.iter().any(closed_by_server), "answered while all eight places were held");
}

#[test]
fn a_forward_whose_target_never_answers_ends_as_a_timeout() {
    // A listener whose accept queue is full: Linux drops further SYNs, so a connect to it
    // times out rather than being refused.
    let full = t!(socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None));
    t!(full.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()));
    t!(full.listen(0));
    let target = t!(full.local_addr()).as_socket().unwrap();
    let mut queued = Vec::new();
    let black_holed = (0..8).any(|_| match TcpStream::connect_timeout(&target, Duration::from_millis(300)) {
        Ok(stream) => {
            queued.push(stream);
            false
        }
        Err(e) => e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock,
    });
    if !black_holed {
        println!("skipped: this system refuses connections to a full listener instead of dropping them");
        return;
    }
    let mut config = Config {
        services: vec![t!(burrowd::config::service_url::parse_service(&format!("tcp://127.0.0.1:0/{target}")))],
        connect_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    config.status = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, forward) = start(config);
    let status = proxy.status_addr().unwrap();
    let mut client = connect(forward);
    assert!(read_to_end(&mut client).is_empty(), "the forward closes without a byte");
    wait_until("the session ended", || proxy.stats().sessions == 1);
    let metrics = get(status, "/metrics");
    let sample = "burrowd_sessions_total{outcome=\"timeout\"} 1";
    assert!(metrics.lines().any(|line| line == sample), "{sample} missing from:\n{metrics}");
    drop(queued);
}
