//! Helpers shared by the integration tests: a proxy started in-process on port 0, target
//! servers, and small SOCKS5 and SOCKS4 clients written against the wire module.
#![allow(dead_code)] // each test binary uses its own subset of these helpers

use burrowd::config::service_url;
use burrowd::config::{RelayMode, ServiceSpec, Socks4Policy};
use burrowd::wire::addr::{Addr, TargetAddr};
use burrowd::wire::socks5::{Command, Greeting, MethodChoice, Reply, ReplyCode, Request, method};
use burrowd::wire::udp::{Header, MAX_HEADER_LEN};
use burrowd::wire::{socks4, userpass};
use burrowd::{Config, Server};
use crossbeam_channel::Receiver;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

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

/// Sets the SOCKS4 policy of every SOCKS service in `config`, as `--socks4` and
/// `--no-socks4` do.
pub fn with_socks4(mut config: Config, policy: Socks4Policy) -> Config {
    for service in &mut config.services {
        if let ServiceSpec::Socks(socks) = service {
            socks.socks4 = policy;
        }
    }
    config
}

/// Turns HTTP off on every mixed service in `config`, as `--no-http` does.
pub fn without_http(mut config: Config) -> Config {
    for service in &mut config.services {
        if let ServiceSpec::Socks(socks) = service {
            socks.http = false;
        }
    }
    config
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

/// Reads exactly one message whose length `wanted_len` tells, however it is split;
/// returns its length in `buf`.
pub fn read_framed(
    stream: &mut TcpStream,
    buf: &mut [u8],
    wanted_len: fn(&[u8]) -> burrowd::wire::Result<usize>,
) -> usize {
    let mut have = 0;
    loop {
        let want = t!(wanted_len(&buf[..have]));
        if want <= have {
            return have;
        }
        t!(stream.read_exact(&mut buf[have..want]));
        have = want;
    }
}

/// Reads exactly one reply, however it is split.
pub fn read_socks5_reply(stream: &mut TcpStream) -> (ReplyCode, TargetAddr) {
    let mut buf = [0u8; Reply::MAX_LEN];
    let len = read_framed(stream, &mut buf, Reply::wanted_len);
    let reply = t!(Reply::parse(&buf[..len]));
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

/// Sends `payload` and FIN through a tunnel to an echo server; asserts exactly the payload
/// comes back, then the echo's FIN.
pub fn assert_echoes(mut stream: TcpStream, payload: &[u8]) {
    t!(stream.write_all(payload));
    t!(stream.shutdown(Shutdown::Write));
    assert_eq!(read_to_end(&mut stream), payload);
}

pub fn ip_target(addr: SocketAddr) -> TargetAddr {
    TargetAddr::Ip(addr)
}

pub fn domain_target(name: &str, port: u16) -> TargetAddr {
    Addr::Domain(name, port).to_owned()
}

/// The server has closed this client (FIN or reset) rather than leaving it hanging until
/// the read timeout; any data it sent first must already have been read.
pub fn assert_closed(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
}

/// Asserts the server closed the connection cleanly (FIN, not a reset) without sending a
/// single byte.
pub fn assert_closed_without_reply(stream: &mut TcpStream) {
    assert_eq!(read_to_end(stream), b"", "expected a close with no reply");
}

/// SOCKS5 BIND naming `peer` as the expected peer; asserts the first reply succeeded and
/// returns the control connection and the address the proxy listens on.
pub fn socks5_bind(proxy: SocketAddr, peer: SocketAddr) -> (TcpStream, SocketAddr) {
    let mut control = connect(proxy);
    socks5_login(&mut control, None);
    let (code, bound) = socks5_request(&mut control, Command::Bind, &TargetAddr::Ip(peer));
    assert_eq!(code, ReplyCode::SUCCEEDED, "first BIND reply");
    let TargetAddr::Ip(bound) = bound else { panic!("BIND replied with a name: {bound}") };
    (control, bound)
}

/// The bytes of a SOCKS4 request; a domain address makes it SOCKS4a.
pub fn socks4_request_bytes(command: socks4::Command, addr: Addr<'_>, user_id: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 600];
    let len = socks4::Request { command, addr, user_id }.emit(&mut buf);
    buf[..len].to_vec()
}

/// Sends a SOCKS4 or 4a request and reads the reply.
pub fn socks4_request(
    stream: &mut TcpStream,
    command: socks4::Command,
    addr: Addr<'_>,
    user_id: &[u8],
) -> socks4::Reply {
    t!(stream.write_all(&socks4_request_bytes(command, addr, user_id)));
    read_socks4_reply(stream)
}

pub fn read_socks4_reply(stream: &mut TcpStream) -> socks4::Reply {
    let mut buf = [0u8; socks4::Reply::LEN];
    t!(stream.read_exact(&mut buf));
    t!(socks4::Reply::parse(&buf))
}

/// Writes `data` into `from` and asserts exactly those bytes come out of `to` (the same
/// stream for an echo).
pub fn assert_carries(from: &TcpStream, to: &TcpStream, data: &[u8]) {
    t!((&*from).write_all(data));
    let mut got = vec![0u8; data.len()];
    t!((&*to).read_exact(&mut got));
    assert_eq!(got, data);
}

/// Asserts the full half-close sequence between two ends of a tunnel: `a` sends FIN,
/// `b` sees exactly the end of the stream, `b` can still send to `a`, then `b`'s FIN
/// reaches `a`.
pub fn assert_half_close(a: &mut TcpStream, b: &mut TcpStream) {
    t!(a.write_all(b"last words"));
    t!(a.shutdown(Shutdown::Write));
    assert_eq!(read_to_end(b), b"last words", "data then FIN reach the other side");
    t!(b.write_all(b"reply after half-close"));
    t!(b.shutdown(Shutdown::Write));
    assert_eq!(read_to_end(a), b"reply after half-close", "the other direction keeps going");
}

/// A host name that fails to resolve without any query leaving this host: burrowd answers
/// `.invalid` names itself (RFC 6761). (A label over 63 bytes, which a resolver refuses
/// before it builds a DNS packet, is no longer a host name burrowd passes on at all.)
pub fn unresolvable_name() -> String {
    "nothing-here.invalid".into()
}

/// The largest datagram a UDP socket can receive, for test buffers.
pub const MAX_DATAGRAM: usize = 65_535;

/// Sends every datagram back to whoever sent it.
pub fn udp_echo_server(bind: &str) -> SocketAddr {
    let socket = t!(UdpSocket::bind(bind));
    let addr = t!(socket.local_addr());
    thread::spawn(move || {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..len], from);
        }
    });
    addr
}

/// A UDP socket on `addr`'s IP (any port) that gives up reading after [`TIMEOUT`].
pub fn udp_socket_near(addr: SocketAddr) -> UdpSocket {
    let socket = t!(UdpSocket::bind(SocketAddr::new(addr.ip(), 0)));
    t!(socket.set_read_timeout(Some(TIMEOUT)));
    socket
}

/// A client's side of a UDP association: the control connection that keeps it alive, the
/// client's datagram socket and the relay address the proxy replied with.
pub struct UdpAssociation {
    pub control: TcpStream,
    pub socket: UdpSocket,
    pub relay: SocketAddr,
}

impl UdpAssociation {
    /// Asks for an association without saying where datagrams will come from (0.0.0.0:0);
    /// the client socket is on the proxy's IP. Success asserted.
    pub fn open(proxy: SocketAddr, credentials: Option<(&str, &str)>) -> Self {
        let unknown = ip_target("0.0.0.0:0".parse().unwrap());
        Self::open_from(proxy, udp_socket_near(proxy), &unknown, credentials)
    }

    /// Asks for an association naming `from` as the client's datagram address.
    pub fn open_from(
        proxy: SocketAddr,
        socket: UdpSocket,
        from: &TargetAddr,
        credentials: Option<(&str, &str)>,
    ) -> Self {
        let mut control = connect(proxy);
        socks5_login(&mut control, credentials);
        let (code, relay) = socks5_request(&mut control, Command::UdpAssociate, from);
        assert_eq!(code, ReplyCode::SUCCEEDED, "UDP ASSOCIATE reply");
        let TargetAddr::Ip(relay) = relay else { panic!("relay address is a name: {relay}") };
        UdpAssociation { control, socket, relay }
    }

    /// Sends `payload` to `target` through the relay.
    pub fn send(&self, target: &TargetAddr, payload: &[u8]) {
        self.send_with_frag(0, target, payload);
    }

    pub fn send_with_frag(&self, frag: u8, target: &TargetAddr, payload: &[u8]) {
        let datagram = datagram(frag, target, payload);
        assert_eq!(t!(self.socket.send_to(&datagram, self.relay)), datagram.len());
    }

    /// Receives one datagram from the relay: the source it is labelled with, and the payload.
    pub fn recv(&self) -> (TargetAddr, Vec<u8>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (len, from) = t!(self.socket.recv_from(&mut buf));
        assert_eq!(from, self.relay, "datagram not from the relay");
        let (header, at) = t!(Header::parse(&buf[..len]));
        assert_eq!(header.frag, 0);
        (header.addr.to_owned(), buf[at..len].to_vec())
    }
}

/// A whole UDP ASSOCIATE datagram: header, then payload.
pub fn datagram(frag: u8, target: &TargetAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_HEADER_LEN + payload.len()];
    let len = Header { frag, addr: target.as_addr() }.emit(&mut buf);
    buf[len..len + payload.len()].copy_from_slice(payload);
    buf.truncate(len + payload.len());
    buf
}

/// Starts a server with `-L`-style service URLs and `-F`-style upstream hops, parsed by
/// the same code as the command line; returns it and every service's address in order.
pub fn start_urls(services: &[&str], chain: &[&str]) -> (Server, Vec<SocketAddr>) {
    let config = Config {
        services: services.iter().map(|url| t!(service_url::parse_service(url))).collect(),
        chain: chain.iter().map(|url| t!(service_url::parse_hop(url))).collect(),
        ..Config::default()
    };
    let server = t!(Server::start(config));
    let addrs = server.local_addrs();
    (server, addrs)
}

/// Waits until `done` holds, failing the test after [`TIMEOUT`]. For state that settles
/// on its own (a session counted out), never for measuring speed.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Fills `buf` with the next bytes of a deterministic pseudo-random stream.
pub fn fill_pseudo_random(state: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

/// Reads until EOF, returning the SHA-256 and length of everything read.
pub fn hash_to_end(stream: &mut TcpStream) -> ([u8; 32], u64) {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match t!(stream.read(&mut buf)) {
            0 => return (hasher.finalize().into(), total),
            n => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
        }
    }
}

/// Writes `len` pseudo-random bytes from `seed`; returns their SHA-256.
pub fn send_pseudo_random(stream: &mut TcpStream, seed: u64, len: usize) -> [u8; 32] {
    let mut state = seed;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let chunk = &mut buf[..left.min(256 * 1024)];
        fill_pseudo_random(&mut state, chunk);
        hasher.update(&*chunk);
        t!(stream.write_all(chunk));
        left -= chunk.len();
    }
    hasher.finalize().into()
}

/// A UDP target that answers every datagram with `replies` datagrams, each the request
/// followed by `#i`, sent back to the datagram's source. Returns its address and a
/// channel of the source addresses it served, one per datagram. Bound to a wildcard
/// address (to hear a broadcast) it could hear other hosts too; it answers only
/// loopback sources, so a test never sends anything off the machine.
pub fn udp_multi_echo(bind: &str, replies: usize) -> (SocketAddr, Receiver<SocketAddr>) {
    let socket = t!(UdpSocket::bind(bind));
    let addr = t!(socket.local_addr());
    let (sources, seen) = crossbeam_channel::unbounded();
    thread::spawn(move || {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            if !from.ip().to_canonical().is_loopback() {
                continue;
            }
            let _ = sources.send(from);
            for i in 0..replies {
                let mut reply = buf[..len].to_vec();
                reply.extend_from_slice(format!("#{i}").as_bytes());
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    (addr, seen)
}

/// A fresh directory under the system temp dir, removed with everything in it when
/// dropped, so a failing test leaves nothing behind either.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("burrowd-{name}-{}", std::process::id()));
        t!(std::fs::create_dir_all(&path));
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `command`, panicking with the command if it cannot start.
///
/// Under Wine, process creation now and then fails with ERROR_INTERNAL_ERROR (1359) when the
/// new process dies before its start-up reaches the wineserver, a fault of the loaded host
/// and not of the program started; that error alone is tried again, three attempts in all.
pub fn spawn_child(command: &mut std::process::Command) -> std::process::Child {
    const WINE_START_FAILED: i32 = 1359;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match command.spawn() {
            Ok(child) => return child,
            Err(e) if cfg!(windows) && e.raw_os_error() == Some(WINE_START_FAILED) && attempts < 3 => {
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{command:?} did not start (attempt {attempts}): {e:?}"),
        }
    }
}

/// Runs the burrowd binary with `args` to its exit, for flags that must make it stop at
/// once (help, version, a bad value). A regression that lets it start serving instead is
/// killed after [`TIMEOUT`] and fails the test rather than hanging it.
pub fn run_burrowd(args: &[&str]) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = spawn_child(
        Command::new(env!("CARGO_BIN_EXE_burrowd"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let deadline = Instant::now() + TIMEOUT;
    while t!(child.try_wait()).is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("burrowd {args:?} was still running after {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    t!(child.wait_with_output())
}

/// Runs `scripts/NAME` with the burrowd binary; it builds network namespaces of its own,
/// names them `burrowd-TAG<its pid>...`, and prints `PASS: ...`, or `skipped: ...` where
/// namespaces cannot be made. Asserts it passed and left no namespace behind; a skip
/// passes, printing why.
pub fn run_netns_script(name: &str, tag: &str) {
    use std::process::{Command, Stdio};
    let script = format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"));
    let child = t!(Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_burrowd"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn());
    let namespace = format!("burrowd-{tag}{}", child.id());
    let output = t!(child.wait_with_output());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if let Some(reason) = stdout.lines().find(|line| line.starts_with("skipped:")) {
        println!("{name} {reason}");
        return;
    }
    assert!(output.status.success() && stdout.contains("PASS:"), "{name} failed:\n{stdout}\n{stderr}");
    let namespaces = t!(Command::new("ip").args(["netns", "list"]).output());
    let left = String::from_utf8_lossy(&namespaces.stdout);
    assert!(!left.contains(&namespace), "{name} left namespaces behind: {left}");
}

/// Every relay mode this system has: splice and copy on Linux, copy elsewhere.
pub fn relay_modes() -> Vec<RelayMode> {
    if cfg!(target_os = "linux") { vec![RelayMode::Splice, RelayMode::Copy] } else { vec![RelayMode::Copy] }
}

/// A TCP connection to `to` from the address `from` (any port): a plain blocking connect (to
/// loopback, so it cannot hang), since with a timeout Windows reports a connection the server
/// closes at once as a failed connect.
pub fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = t!(socket2::Socket::new(socket2::Domain::for_address(to), socket2::Type::STREAM, None));
    t!(socket.bind(&SocketAddr::new(from, 0).into()));
    t!(socket.connect(&to.into()));
    let stream = TcpStream::from(socket);
    t!(stream.set_read_timeout(Some(TIMEOUT)));
    stream
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Held by the tests of one file that count the whole process's threads or descriptors.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Descriptors this process has open; `None` where that cannot be counted.
pub fn open_descriptors() -> Option<usize> {
    cfg!(target_os = "linux").then(|| t!(std::fs::read_dir("/proc/self/fd")).count())
}
