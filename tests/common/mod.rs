//! Helpers shared by the integration tests: a proxy started in-process on port 0, target
//! servers, and a small SOCKS5 client written against the wire module.
#![allow(dead_code)] // each test binary uses its own subset of these helpers

use burrowd::wire::addr::{Addr, TargetAddr};
use burrowd::wire::socks5::{Command, Greeting, MethodChoice, Reply, ReplyCode, Request, method};
use burrowd::wire::userpass;
use burrowd::{Config, Server};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// Unwraps, naming the expression that failed.
#[macro_export]
macro_rules! t {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => panic!("{} failed: {:?}", stringify!($e), e),
        }
    };
}

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a server; returns it and its first listening address.
pub fn start(config: Config) -> (Server, SocketAddr) {
    let server = t!(Server::start(config));
    let addr = server.local_addrs()[0];
    (server, addr)
}

/// A default SOCKS proxy on 127.0.0.1, any free port.
pub fn proxy() -> (Server, SocketAddr) {
    start(Config::socks_on("127.0.0.1:0".parse().unwrap()))
}

/// A TCP server on `bind` running `handle` for each connection on its own thread.
pub fn serve_tcp(bind: &str, handle: impl Fn(TcpStream) + Send + Sync + Clone + 'static) -> SocketAddr {
    let listener = t!(TcpListener::bind(bind));
    let addr = t!(listener.local_addr());
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = handle.clone();
            thread::spawn(move || handle(stream));
        }
    });
    addr
}

/// Echoes everything back; on the client's FIN, finishes echoing and sends its own FIN.
pub fn echo_server(bind: &str) -> SocketAddr {
    serve_tcp(bind, |mut stream| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = stream.shutdown(Shutdown::Write);
    })
}

/// A port on 127.0.0.1 with nothing listening (bound, then closed).
pub fn closed_port() -> SocketAddr {
    let listener = t!(TcpListener::bind("127.0.0.1:0"));
    t!(listener.local_addr())
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = t!(TcpStream::connect_timeout(&addr, TIMEOUT));
    t!(stream.set_read_timeout(Some(TIMEOUT)));
    stream
}

/// Greeting and, with credentials, RFC 1929 login. Panics unless the server accepts.
pub fn socks5_login(stream: &mut TcpStream, credentials: Option<(&str, &str)>) {
    let offered = if credentials.is_some() { method::USER_PASS } else { method::NO_AUTH };
    let mut buf = [0u8; 600];
    let len = Greeting { methods: &[offered] }.emit(&mut buf);
    t!(stream.write_all(&buf[..len]));
    let mut choice = [0u8; MethodChoice::LEN];
    t!(stream.read_exact(&mut choice));
    assert_eq!(t!(MethodChoice::parse(&choice)).method, offered, "method choice");
    if let Some((user, password)) = credentials {
        let len = userpass::Request { user: user.as_bytes(), password: password.as_bytes() }.emit(&mut buf);
        t!(stream.write_all(&buf[..len]));
        let mut status = [0u8; userpass::Status::LEN];
        t!(stream.read_exact(&mut status));
        assert_eq!(t!(userpass::Status::parse(&status)).status, userpass::STATUS_SUCCESS, "login");
    }
}

/// Sends a request and reads the whole reply.
pub fn socks5_request(stream: &mut TcpStream, command: Command, target: &TargetAddr) -> (ReplyCode, TargetAddr) {
    let mut buf = [0u8; Request::MAX_LEN];
    let len = Request { command, addr: target.as_addr() }.emit(&mut buf);
    t!(stream.write_all(&buf[..len]));
    read_socks5_reply(stream)
}

/// Reads exactly one reply, however it is split.
pub fn read_socks5_reply(stream: &mut TcpStream) -> (ReplyCode, TargetAddr) {
    let mut buf = [0u8; Reply::MAX_LEN];
    let mut have = 0;
    loop {
        let want = t!(Reply::wanted_len(&buf[..have]));
        if want <= have {
            break;
        }
        t!(stream.read_exact(&mut buf[have..want]));
        have = want;
    }
    let reply = t!(Reply::parse(&buf[..have]));
    (reply.code, reply.addr.to_owned())
}

/// A tunnel through the proxy: login, CONNECT, success asserted.
pub fn socks5_connect(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut stream = connect(proxy);
    socks5_login(&mut stream, None);
    let (code, _) = socks5_request(&mut stream, Command::Connect, &TargetAddr::Ip(target));
    assert_eq!(code, ReplyCode::SUCCEEDED);
    stream
}

/// Reads until EOF; fails the test on a read error or timeout.
pub fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    t!(stream.read_to_end(&mut out));
    out
}

pub fn ip_target(addr: SocketAddr) -> TargetAddr {
    TargetAddr::Ip(addr)
}

pub fn domain_target(name: &str, port: u16) -> TargetAddr {
    Addr::Domain(name, port).to_owned()
}

/// A domain name that fails to resolve without any query leaving this host: a label
/// longer than 63 bytes is rejected by the resolver before it builds a DNS packet (checked
/// with strace), whereas a plain `.invalid` name would be sent to the configured server.
pub fn unresolvable_name() -> String {
    format!("{}.invalid", "x".repeat(64))
}
