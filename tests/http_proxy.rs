//! HTTP proxy clients over real sockets, on mixed ports (SOCKS and HTTP on one port) and
//! `http://` services: CONNECT tunnels, absolute-form requests forwarded to an origin,
//! Basic login, rules, failures and their statuses, chains with SOCKS5 and HTTP hops, and
//! slow request heads.

mod common;

use burrowd::config::rules::{RuleSource, Rules, Verdict};
use burrowd::config::service_url;
use burrowd::wire::base64;
use burrowd::wire::http::{self, BodyLength, ChunkedBody, ResponseHead};
use burrowd::wire::socks5::{Command, ReplyCode};
use burrowd::{Config, Server};
use common::*;
use crossbeam_channel::{Receiver, unbounded};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// A response as a client sees it: status, the raw head, and the body after it.
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response head from `stream`, byte by byte so nothing behind it is taken.
fn read_head(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while http::head_len(&head) != Ok(head.len()) {
        assert_eq!(
            t!(stream.read(&mut byte)),
            1,
            "closed inside a response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let status = t!(ResponseHead::parse(&head)).status;
    (status, String::from_utf8(head).unwrap())
}

/// Sends `request` raw on a new connection and reads the response to the close.
fn exchange(proxy: SocketAddr, request: &[u8]) -> Response {
    let mut stream = connect(proxy);
    t!(stream.write_all(request));
    let (status, head) = read_head(&mut stream);
    Response { status, head, body: read_to_end(&mut stream) }
}

fn basic(user: &str, password: &str) -> String {
    format!("Proxy-Authorization: Basic {}\r\n", base64::encode(format!("{user}:{password}").as_bytes()))
}

/// Opens a CONNECT tunnel to `target` (as written in the request line); panics unless 200.
fn tunnel(proxy: SocketAddr, target: &str, extra: &str) -> TcpStream {
    let mut stream = connect(proxy);
    t!(stream.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n").as_bytes()));
    let (status, head) = read_head(&mut stream);
    assert_eq!(status, 200, "{head}");
    assert_eq!(head, "HTTP/1.1 200 Connection established\r\n\r\n");
    stream
}

/// A mixed proxy (SOCKS and HTTP on one port) on 127.0.0.1.
fn mixed(configure: impl FnOnce(&mut Config)) -> (Server, SocketAddr) {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    configure(&mut config);
    start(config)
}

/// What an origin received on one connection: the framed request, then whatever else came
/// before the proxy closed.
struct Received {
    head: String,
    body: Vec<u8>,
    after: Vec<u8>,
}

/// An origin server that reads one request (framed by its own headers), answers with
/// `response`, then reads to the close; each connection's bytes come out of the receiver.
fn origin(response: &'static [u8]) -> (SocketAddr, Receiver<Received>) {
    let (sender, received) = unbounded();
    let addr = serve_tcp("127.0.0.1:0", move |mut stream| {
        t!(stream.set_read_timeout(Some(TIMEOUT)));
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while http::head_len(&head) != Ok(head.len()) {
            if stream.read(&mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let request = t!(http::RequestHead::parse(&head));
        let mut body = Vec::new();
        match t!(request.body_length()) {
            BodyLength::Fixed(len) => {
                body.resize(len as usize, 0);
                t!(stream.read_exact(&mut body));
            }
            BodyLength::Chunked => {
                let mut chunked = ChunkedBody::default();
                while !chunked.is_done() {
                    t!(stream.read_exact(&mut byte));
                    assert_eq!(t!(chunked.advance(&byte)), 1);
                    body.push(byte[0]);
                }
            }
            BodyLength::Empty | BodyLength::UntilClose => {}
        }
        t!(stream.write_all(response));
        let after = read_to_end(&mut stream);
        let head = String::from_utf8(head).unwrap();
        let _ = sender.send(Received { head, body, after });
    });
    (addr, received)
}

const OK_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\
    Keep-Alive: timeout=5\r\nX-Origin: yes\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
const OK_FIXED: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone";

#[test]
fn connect_tunnels_keep_the_first_flight_and_half_close_in_both_relay_modes() {
    let target = echo_server("127.0.0.1:0");
    for mode in relay_modes() {
        let (_proxy, proxy_addr) = mixed(|config| config.relay = mode);
        // The request head and a TLS-like ClientHello in one write: the bytes behind the
        // head must reach the target.
        let mut stream = connect(proxy_addr);
        let hello = [0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5];
        let mut flight = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes();
        flight.extend_from_slice(&hello);
        t!(stream.write_all(&flight));
        let (status, head) = read_head(&mut stream);
        assert_eq!((status, head.as_str()), (200, "HTTP/1.1 200 Connection established\r\n\r\n"), "{mode:?}");
        let mut echoed = [0u8; 10];
        t!(stream.read_exact(&mut echoed));
        assert_eq!(echoed, hello, "{mode:?}");
        drop(stream);
        let listener = t!(std::net::TcpListener::bind("127.0.0.1:0"));
        let mut client = tunnel(proxy_addr, &t!(listener.local_addr()).to_string(), "");
        let (mut target_side, _) = t!(listener.accept());
        t!(target_side.set_read_timeout(Some(TIMEOUT)));
        assert_carries(&client, &target_side, b"up");
        assert_carries(&target_side, &client, b"down");
        assert_half_close(&mut client, &mut target_side);
    }
}

#[test]
fn connect_reaches_names_ipv4_and_bracketed_ipv6() {
    let (_proxy, proxy_addr) = mixed(|_| {});
    let v4 = echo_server("127.0.0.1:0");
    assert_echoes(tunnel(proxy_addr, &format!("localhost:{}", v4.port()), ""), b"by name");
    assert_echoes(tunnel(proxy_addr, &v4.to_string(), ""), b"by IPv4");
    if let Ok(listener) = std::net::TcpListener::bind("[::1]:0") {
        drop(listener);
        let v6 = echo_server("[::1]:0");
        assert_eq!(v6.to_string(), format!("[::1]:{}", v6.port()));
        assert_echoes(tunnel(proxy_addr, &v6.to_string(), ""), b"by IPv6");
    }
}

#[test]
fn the_same_port_still_serves_socks5_and_socks4() {
    let (_proxy, proxy_addr) = mixed(|_| {});
    let target = echo_server("127.0.0.1:0");
    assert_echoes(socks5_connect(proxy_addr, target), b"socks5");
    assert_echoes(tunnel(proxy_addr, &target.to_string(), ""), b"http");
}

#[test]
fn an_absolute_get_goes_to_the_origin_in_origin_form_without_hop_by_hop_headers() {
    let (origin_addr, received) = origin(OK_CHUNKED);
    let (_proxy, proxy_addr) = mixed(|_| {});
    let request = format!(
        "GET http://{origin_addr}/path?q=1 HTTP/1.1\r\nHost: wrong.example\r\nUser-Agent: test\r\n\
         Connection: keep-alive, X-Secret\r\nX-Secret: hop\r\nProxy-Connection: keep-alive\r\n\
         Keep-Alive: 300\r\nTE: trailers\r\nUpgrade: h2c\r\n\r\n"
    );
    let response = exchange(proxy_addr, request.as_bytes());
    assert_eq!(response.status, 200);
    assert_eq!(response.header("Connection"), Some("close"), "{}", response.head);
    assert_eq!(response.header("Keep-Alive"), None, "{}", response.head);
    assert_eq!(response.header("X-Origin"), Some("yes"));
    // The chunked body comes through as it was framed, and the client reads it as such.
    assert_eq!(response.body, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let got = t!(received.recv_timeout(TIMEOUT));
    assert_eq!(
        got.head,
        format!("GET /path?q=1 HTTP/1.1\r\nHost: {origin_addr}\r\nUser-Agent: test\r\nConnection: close\r\n\r\n")
    );
    assert!(got.body.is_empty() && got.after.is_empty());
}

#[test]
fn request_bodies_pass_with_their_framing_and_nothing_behind_them_reaches_the_origin() {
    let (origin_addr, received) = origin(OK_FIXED);
    let (_proxy, proxy_addr) = mixed(|_| {});
    // Content-Length, with a second request pipelined behind it that must never get there.
    let pipelined = format!("GET http://{origin_addr}/second HTTP/1.1\r\n{}\r\n", basic("a", "b"));
    let request =
        format!("POST http://{origin_addr}/upload HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world{pipelined}");
    let response = exchange(proxy_addr, request.as_bytes());
    assert_eq!((response.status, response.body.as_slice()), (201, &b"done"[..]));
    assert_eq!(response.header("Connection"), Some("close"));
    let got = t!(received.recv_timeout(TIMEOUT));
    assert!(got.head.starts_with("POST /upload HTTP/1.1\r\n"), "{}", got.head);
    assert_eq!((got.body.as_slice(), got.after.as_slice()), (&b"hello world"[..], &b""[..]));

    // Chunked, sent in small pieces, with trailers.
    let mut stream = connect(proxy_addr);
    let head = format!("POST http://{origin_addr}/chunks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    let body = b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nX-Trailer: t\r\n\r\n";
    t!(stream.write_all(head.as_bytes()));
    for piece in body.chunks(5) {
        t!(stream.write_all(piece));
        std::thread::sleep(Duration::from_millis(5));
    }
    t!(stream.write_all(pipelined.as_bytes()));
    let (status, _) = read_head(&mut stream);
    assert_eq!((status, read_to_end(&mut stream).as_slice()), (201, &b"done"[..]));
    let got = t!(received.recv_timeout(TIMEOUT));
    assert!(got.head.contains("\r\nTransfer-Encoding: chunked\r\n"), "{}", got.head);
    assert_eq!((got.body.as_slice(), got.after.as_slice()), (&body[..], &b""[..]));
}

#[test]
fn a_request_whose_end_is_in_doubt_is_refused_before_anything_is_sent() {
    let (origin_addr, received) = origin(OK_FIXED);
    let (_proxy, proxy_addr) = mixed(|_| {});
    let request =
        format!("POST http://{origin_addr}/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc");
    let response = exchange(proxy_addr, request.as_bytes());
    assert_eq!(response.status, 400);
    assert!(received.recv_timeout(Duration::from_millis(200)).is_err(), "nothing reached the origin");
}

#[test]
fn origin_form_malformed_and_oversized_heads_get_400_and_431_with_one_line() {
    let (_proxy, proxy_addr) = mixed(|_| {});
    let response = exchange(proxy_addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(response.status, 400);
    let body = String::from_utf8(response.body.clone()).unwrap();
    assert!(body.contains("is a proxy") && body.ends_with('\n') && body.lines().count() == 1, "{body}");
    assert_eq!(response.header("Content-Type"), Some("text/plain; charset=utf-8"));

    assert_eq!(exchange(proxy_addr, b"GET http://x/ HTTP/2.0\r\n\r\n").status, 400);
    assert_eq!(exchange(proxy_addr, b"CONNECT nowhere HTTP/1.1\r\n\r\n").status, 400);
    assert_eq!(exchange(proxy_addr, b"GET https://x/ HTTP/1.1\r\n\r\n").status, 400);

    let long = format!("GET http://x/ HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(17 * 1024));
    let response = exchange(proxy_addr, long.as_bytes());
    assert_eq!(response.status, 431);
    assert_eq!(response.body, b"burrowd: request head over 16 KiB\n");
}

#[test]
fn basic_login_with_the_socks5_users_and_407_counted_as_a_failed_login() {
    let mut config = Config::socks_with_users("127.0.0.1:0".parse().unwrap(), &["alice:s3cret"]);
    config.status = Some("127.0.0.1:0".parse().unwrap());
    let (proxy, proxy_addr) = start(config);
    let target = echo_server("127.0.0.1:0");
    for extra in [String::new(), basic("alice", "wrong"), basic("mallory", "s3cret")] {
        let response = exchange(proxy_addr, format!("CONNECT {target} HTTP/1.1\r\n{extra}\r\n").as_bytes());
        assert_eq!(response.status, 407, "{extra}");
        assert_eq!(response.header("Proxy-Authenticate"), Some("Basic realm=\"burrowd\""));
    }
    assert_echoes(tunnel(proxy_addr, &target.to_string(), &basic("alice", "s3cret")), b"logged in");
    // The same login on SOCKS5, on the same port.
    let mut stream = connect(proxy_addr);
    socks5_login(&mut stream, Some(("alice", "s3cret")));
    assert_eq!(socks5_request(&mut stream, Command::Connect, &ip_target(target)).0, ReplyCode::SUCCEEDED);
    drop(stream);
    wait_until("every session ended", || proxy.stats().sessions == 5);
    let metrics = status_get(proxy.status_addr().unwrap(), "/metrics");
    for sample in [
        "burrowd_login_failures_total 3",
        "burrowd_http_replies_total{status=\"407\"} 3",
        "burrowd_http_replies_total{status=\"200\"} 1",
    ] {
        assert!(metrics.lines().any(|line| line == sample), "{sample} missing from:\n{metrics}");
    }
}

fn status_get(status: SocketAddr, path: &str) -> String {
    let response = exchange(status, format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    String::from_utf8(response.body).unwrap()
}

#[test]
fn rules_with_cmd_connect_give_403_and_failures_give_502_and_504() {
    let target = echo_server("127.0.0.1:0");
    let (_proxy, proxy_addr) = mixed(|config| {
        let deny = format!("cmd connect port {}", target.port());
        config.rules = t!(Rules::load(vec![RuleSource::Flag(Verdict::Deny, deny)]));
    });
    let response = exchange(proxy_addr, format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(
        (response.status, response.body.as_slice()),
        (403, &b"burrowd: the access rules refuse this request\n"[..])
    );
    let response = exchange(proxy_addr, format!("GET http://{target}/ HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(response.status, 403);

    let refused = exchange(proxy_addr, format!("CONNECT {} HTTP/1.1\r\n\r\n", closed_port()).as_bytes());
    assert_eq!(refused.status, 502);
    assert_eq!(refused.body, b"burrowd: cannot reach the target\n");

    // A hop that accepts and never answers: the CONNECT through it times out.
    let silent = serve_tcp("127.0.0.1:0", |mut stream| {
        let _ = read_to_end(&mut stream);
    });
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.chain = vec![t!(service_url::parse_hop(&format!("http://{silent}")))];
    config.connect_timeout = Duration::from_millis(300);
    let (_front, front_addr) = start(config);
    let response = exchange(front_addr, format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(
        (response.status, response.body.as_slice()),
        (504, &b"burrowd: the target did not answer in time\n"[..])
    );
}

#[test]
fn an_origin_that_never_answers_gets_504_at_the_idle_timeout() {
    let silent = serve_tcp("127.0.0.1:0", |mut stream| {
        let _ = read_to_end(&mut stream);
    });
    let (_proxy, proxy_addr) = mixed(|config| config.idle_timeout = Some(Duration::from_millis(300)));
    let response = exchange(proxy_addr, format!("GET http://{silent}/ HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(response.status, 504);
}

#[test]
fn no_http_closes_http_clients_without_a_reply_and_socks5_urls_stay_socks5_only() {
    let (_proxy, proxy_addr) = start(without_http(Config::socks_on("127.0.0.1:0".parse().unwrap())));
    let mut stream = connect(proxy_addr);
    t!(stream.write_all(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n"));
    assert_closed_without_reply(&mut stream);
    assert_echoes(socks5_connect(proxy_addr, echo_server("127.0.0.1:0")), b"socks still served");

    let (_server, addrs) = start_urls(&["socks5://127.0.0.1:0", "http://127.0.0.1:0"], &[]);
    let mut stream = connect(addrs[0]);
    t!(stream.write_all(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n"));
    assert_closed_without_reply(&mut stream);
    // An http:// service takes every first byte as HTTP: a SOCKS5 greeting is a bad request.
    assert_eq!(exchange(addrs[1], &[5, 1, 0]).status, 400);
    let target = echo_server("127.0.0.1:0");
    assert_echoes(tunnel(addrs[1], &target.to_string(), ""), b"http only");
}

#[test]
fn http_clients_go_through_a_socks5_hop_and_both_kinds_go_through_an_http_hop() {
    let target = echo_server("127.0.0.1:0");
    let (origin_addr, received) = origin(OK_FIXED);
    let (_socks_hop, socks_hop) = start_urls(&["socks5://127.0.0.1:0"], &[]);
    let (_http_hop, http_hop) = start_urls(&["http://carol:pw@127.0.0.1:0"], &[]);
    for hop in [format!("socks5://{}", socks_hop[0]), format!("http://carol:pw@{}", http_hop[0])] {
        let (_front, front) = start_urls(&["socks://127.0.0.1:0"], &[&hop]);
        assert_echoes(tunnel(front[0], &target.to_string(), ""), hop.as_bytes());
        assert_echoes(socks5_connect(front[0], target), hop.as_bytes());
        let response = exchange(front[0], format!("GET http://{origin_addr}/via HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!((response.status, response.body.as_slice()), (201, &b"done"[..]), "{hop}");
        assert!(t!(received.recv_timeout(TIMEOUT)).head.starts_with("GET /via HTTP/1.1\r\n"));
    }
    // A wrong login at the HTTP hop is the chain failing: 502 here, reply 1 for SOCKS5.
    let (_front, front) = start_urls(&["socks://127.0.0.1:0"], &[&format!("http://carol:nope@{}", http_hop[0])]);
    assert_eq!(exchange(front[0], format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes()).status, 502);
    let mut stream = connect(front[0]);
    socks5_login(&mut stream, None);
    assert_eq!(socks5_request(&mut stream, Command::Connect, &ip_target(target)).0, ReplyCode::GENERAL_FAILURE);
}

#[test]
fn bind_and_udp_through_an_http_hop_fail_with_command_not_supported() {
    let (_http_hop, http_hop) = start_urls(&["http://127.0.0.1:0"], &[]);
    let (_front, front) = start_urls(&["socks://127.0.0.1:0"], &[&format!("http://{}", http_hop[0])]);
    for command in [Command::Bind, Command::UdpAssociate] {
        let mut stream = connect(front[0]);
        socks5_login(&mut stream, None);
        let (code, _) = socks5_request(&mut stream, command, &ip_target("127.0.0.1:9".parse().unwrap()));
        assert_eq!(code, ReplyCode::COMMAND_NOT_SUPPORTED, "{command}");
        assert_closed(&mut stream);
    }
}

#[test]
fn a_udp_service_behind_an_http_hop_is_a_start_up_error() {
    let output = run_burrowd(&["-L", "udp://127.0.0.1:0/127.0.0.1:53", "-F", "http://127.0.0.1:3128", "--check"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is an HTTP proxy, which carries TCP only") && stderr.lines().count() == 1, "{stderr}");
}

#[test]
fn slow_request_heads_are_reclaimed_and_the_handshake_timeout_bounds_a_head() {
    let _serial = one_at_a_time();
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.max_clients = 4;
    config.queue = 0;
    config.handshake_timeout = Duration::from_secs(120);
    let (proxy, proxy_addr) = start(config);
    let target = echo_server("127.0.0.1:0");
    // Heads that never end hold every worker, until newer clients need the room.
    let _stallers: Vec<_> = (0..8)
        .map(|_| {
            let mut stream = connect(proxy_addr);
            t!(stream.write_all(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n"));
            stream
        })
        .collect();
    for _ in 0..3 {
        assert_echoes(tunnel(proxy_addr, &target.to_string(), ""), b"served");
    }
    assert!(proxy.stats().reclaimed >= 1, "{:?}", proxy.stats());

    let (_quick, quick_addr) = mixed(|config| config.handshake_timeout = Duration::from_millis(300));
    let mut stream = connect(quick_addr);
    t!(stream.write_all(b"GET http://127.0.0.1:1/ HTTP/1.1\r\n"));
    assert_closed_without_reply(&mut stream);
    let _ = stream.shutdown(Shutdown::Both);
}

#[test]
fn http_requests_get_the_rules_socks_gets_a_trailing_dot_and_an_undecidable_name_refused() {
    let target = echo_server("127.0.0.1:0");
    let rules = |list: &[(Verdict, &str)]| {
        t!(Rules::load(list.iter().map(|(verdict, rule)| RuleSource::Flag(*verdict, (*rule).to_owned())).collect()))
    };
    let (_proxy, proxy_addr) = mixed(|config| {
        config.rules = rules(&[(Verdict::Deny, "to localhost"), (Verdict::Allow, "to *")]);
    });
    let response = exchange(proxy_addr, format!("CONNECT localhost.:{} HTTP/1.1\r\n\r\n", target.port()).as_bytes());
    assert_eq!(response.status, 403, "a trailing dot does not get past a name rule");
    // Through a chain the name is resolved upstream, so an address rule cannot judge it.
    let (_hop, hop) = start_urls(&["socks5://127.0.0.1:0"], &[]);
    let (_front, front_addr) = mixed(|config| {
        config.chain = vec![t!(service_url::parse_hop(&format!("socks5://{}", hop[0])))];
        config.rules = rules(&[(Verdict::Allow, "to 192.0.2.0/24")]);
    });
    let response = exchange(front_addr, format!("GET http://localhost:{}/ HTTP/1.1\r\n\r\n", target.port()).as_bytes());
    assert_eq!(response.status, 403, "undecidable upstream is refused, never allowed");
}

#[test]
fn an_origin_that_answers_before_taking_the_body_is_heard() {
    // It reads the head only, answers 413 and closes, as a server refusing an upload does.
    let origin_addr = serve_tcp("127.0.0.1:0", |mut stream| {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while http::head_len(&head) != Ok(head.len()) && stream.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let _ = stream.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large");
    });
    let (_proxy, proxy_addr) = mixed(|_| {});
    let mut stream = connect(proxy_addr);
    let body = vec![b'x'; 8 << 20];
    let head = format!("POST http://{origin_addr}/upload HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
    t!(stream.write_all(head.as_bytes()));
    // The upload stops where the proxy stops reading; what it was answered is what counts.
    let _ = stream.write_all(&body);
    let (status, _) = read_head(&mut stream);
    assert_eq!(status, 413);
}
