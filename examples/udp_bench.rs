//! UDP packets per second through burrowd's UDP ASSOCIATE next to a direct exchange with
//! the same echo server, in one run, all on loopback.
//!
//! A client keeps a window of 64 datagrams outstanding: each echo that comes back lets one
//! more go. A read that waits longer than LOSS_WAIT counts what was in flight as lost and
//! refills the window. Each measurement stops after PACKETS echoes or TIME_LIMIT, whichever is first.
//!
//!     cargo run --release --example udp_bench [PAYLOAD_BYTES...]   (default: 64 1400)

use burrowd::wire::addr::Addr;
use burrowd::wire::socks5::{Command, Greeting, MethodChoice, Reply, ReplyCode, Request, method};
use burrowd::wire::udp::{Header, MAX_HEADER_LEN};
use burrowd::{Config, Server};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const WINDOW: usize = 64;
const PACKETS: u64 = 200_000;
const TIME_LIMIT: Duration = Duration::from_secs(5);
const ROUNDS: usize = 5;
const LOSS_WAIT: Duration = Duration::from_millis(200);

fn main() -> io::Result<()> {
    let sizes: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("payload size in bytes")).collect();
    let sizes = if sizes.is_empty() { vec![64, 1400] } else { sizes };

    let echo = udp_echo("127.0.0.1:0")?;
    let server = Server::start(Config::socks_on("127.0.0.1:0".parse().unwrap()))?;
    let proxy = server.local_addrs()[0];

    println!("window {WINDOW}, up to {PACKETS} echoes or {TIME_LIMIT:?} per run, {ROUNDS} rounds, loopback");
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = Header { frag: 0, addr: Addr::Ip(echo) }.emit(&mut header);
    for size in sizes {
        let payload = vec![0x5a; size];
        let (mut direct, mut proxied) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            direct.push(run(&payload, echo, &[])?);
            // a fresh association per run: its client port is fixed by the run's socket
            let (_control, relay) = associate(proxy)?;
            proxied.push(run(&payload, relay, &header[..header_len])?);
        }
        let (direct, proxied) = (median(direct), median(proxied));
        println!(
            "payload {size:>5} B: direct {direct}  through burrowd {proxied}  ratio {:.2}",
            proxied.rate() / direct.rate()
        );
    }
    Ok(())
}

fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    runs.swap_remove(runs.len() / 2)
}

/// One measurement: echoes received, datagrams lost, and how long it took.
struct Measured {
    echoes: u64,
    lost: u64,
    elapsed: Duration,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.echoes as f64 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.0} pkt/s ({} in {:.2}s, {} lost)",
            self.rate(),
            self.echoes,
            self.elapsed.as_secs_f64(),
            self.lost
        )
    }
}

/// Sends `header` + `payload` to `to` with WINDOW in flight until the limits; an echo
/// comes back the same length (through burrowd, with the echo server's address as header).
fn run(payload: &[u8], to: SocketAddr, header: &[u8]) -> io::Result<Measured> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(to)?;
    socket.set_read_timeout(Some(LOSS_WAIT))?;
    let datagram = [header, payload].concat();
    let mut buf = vec![0u8; 65_535];
    let (mut echoes, mut lost, mut in_flight) = (0u64, 0u64, 0usize);
    let started = Instant::now();
    while echoes < PACKETS && started.elapsed() < TIME_LIMIT {
        while in_flight < WINDOW {
            socket.send(&datagram)?;
            in_flight += 1;
        }
        match socket.recv(&mut buf) {
            Ok(len) => {
                assert_eq!(len, datagram.len(), "an echo of another size");
                echoes += 1;
                in_flight -= 1;
            }
            // nothing for LOSS_WAIT: whatever was in flight is gone
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                lost += in_flight as u64;
                in_flight = 0;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Measured { echoes, lost, elapsed: started.elapsed() })
}

fn udp_echo(bind: &str) -> io::Result<SocketAddr> {
    let socket = UdpSocket::bind(bind)?;
    let addr = socket.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_535];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..len], from);
        }
    });
    Ok(addr)
}

/// Opens an association with no login; returns the control connection (keep it open)
/// and the relay address.
fn associate(proxy: SocketAddr) -> io::Result<(TcpStream, SocketAddr)> {
    let mut control = TcpStream::connect(proxy)?;
    let mut buf = [0u8; Reply::MAX_LEN];
    let len = Greeting { methods: &[method::NO_AUTH] }.emit(&mut buf);
    control.write_all(&buf[..len])?;
    let mut choice = [0u8; MethodChoice::LEN];
    control.read_exact(&mut choice)?;
    let from = Addr::Ip("0.0.0.0:0".parse().unwrap());
    let len = Request { command: Command::UdpAssociate, addr: from }.emit(&mut buf);
    control.write_all(&buf[..len])?;
    let mut have = 0;
    while let want @ 1.. = Reply::wanted_len(&buf[..have]).map_err(io::Error::other)?.saturating_sub(have) {
        control.read_exact(&mut buf[have..have + want])?;
        have += want;
    }
    let reply = Reply::parse(&buf[..have]).map_err(io::Error::other)?;
    match reply.addr {
        Addr::Ip(relay) if reply.code == ReplyCode::SUCCEEDED => Ok((control, relay)),
        _ => Err(io::Error::other(format!("UDP ASSOCIATE refused: {:?}", reply.code))),
    }
}
