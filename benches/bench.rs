//! The burrowd benchmark: `cargo bench --bench bench` (options after `--`, see `usage`).
//!
//! Starts the release burrowd binary as a child process on a free loopback port (once per
//! relay mode), microsocks too when it is installed, plus its own loopback sink, echo and
//! holding servers, then measures every route side by side in one run so that ratios to a
//! direct connection mean something on a shared, noisy machine. Loopback only; every loop
//! is bounded in count and in time. This is a benchmark, not a test: nothing here asserts.

use burrowd::wire::proxy_header::{Addresses, Header, V1_MAX_LEN, Version};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BURROWD: &str = env!("CARGO_BIN_EXE_burrowd");
/// Every client socket gives up after this, so a stuck proxy cannot hang the benchmark.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const STREAM_CHUNK: usize = 256 * 1024;
const HANDSHAKE_WORKERS: usize = 16;
/// Bounds the handshake loop in count as well as in time.
const MAX_SESSIONS_PER_WORKER: usize = 200_000;
const PING_SIZE: usize = 64;
const PING_ROUNDS: usize = 20_000;
const IDLE_COUNTS: [usize; 2] = [1_000, 5_000];
/// Sequential CONNECT sessions counted under strace: the difference between a short and a
/// long run, so that start-up and exit cancel out.
const STRACED_SESSIONS: [usize; 2] = [100, 600];
const UDP_PAYLOAD: usize = 64;
/// Datagrams in flight at once: a sender that waits for echoes, so none need be lost.
const UDP_WINDOW: usize = 64;
const UDP_PACKETS: usize = 200_000;
const UDP_MAX_TIME: Duration = Duration::from_secs(5);
/// A datagram not echoed within this is counted lost.
const UDP_LOSS_WAIT: Duration = Duration::from_millis(200);
/// The hard descriptor limit on the benchmark machines; the soft limit is raised to it.
const NOFILE: u64 = 20_000;

/// Flags every burrowd of this run gets besides its own (the `--rules` file).
static BURROWD_EXTRA_ARGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
/// With `--proxy-protocol`: the PROXY header version every client connection to a proxy
/// begins with, as a load balancer's would.
static PROXY_HEADER: std::sync::OnceLock<Version> = std::sync::OnceLock::new();

/// Reads /sessions and /metrics ten times a second for as long as the benchmark runs,
/// from whichever burrowd is listening on `status` at the moment.
fn read_status_pages(status: SocketAddr) {
    loop {
        for page in ["/sessions", "/metrics"] {
            if let Ok(mut stream) = TcpStream::connect_timeout(&status, Duration::from_millis(100)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = write!(stream, "GET {page} HTTP/1.1\r\n\r\n");
                let _ = std::io::copy(&mut stream, &mut std::io::sink());
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `count` deny rules that no request of the benchmark matches (its clients and
/// targets are on 127.0.0.1), in the kinds people write: client networks, destination
/// networks, domains, ports. The last is a deny, so the default is allow.
fn write_rules(count: usize) -> std::path::PathBuf {
    let mut text = String::new();
    for i in 0..count {
        let (a, b) = (i / 256 % 256, i % 256);
        text += &match i % 4 {
            0 => format!("deny from 10.{a}.{b}.0/24\n"),
            1 => format!("deny to 10.{a}.{b}.0/24\n"),
            2 => format!("deny to .example{i}.test\n"),
            _ => format!("deny to 192.0.2.{b} port {}\n", 1 + i % 1000),
        };
    }
    let path = std::env::temp_dir().join(format!("burrowd-bench-rules-{}", std::process::id()));
    std::fs::write(&path, text).expect("write the rules file");
    path
}

fn usage() -> &'static str {
    "usage: cargo bench --bench bench -- [--runs N] [--gib G] [--secs S] [--json] [--only LIST]
  --runs N     runs per figure; each cell is median [min-max] (default 3)
  --gib G      GiB moved per throughput run (default 1)
  --secs S     seconds per handshake-rate run (default 3)
  --json       also print one JSON object per figure
  --only LIST  comma-separated subset of: throughput,handshake,syscalls,pingpong,memory,udp
  --rules N    run burrowd with N access rules that the benchmark's traffic never matches,
               so every request is checked against all of them (default 0)
  --status     run burrowd with --status on loopback, and read /sessions and /metrics
               ten times a second while it serves
  --proxy-protocol v1|v2  run burrowd with --proxy-protocol 127.0.0.1, and begin every
               connection to it with a PROXY header of that version, as a load balancer
               does (microsocks, which speaks no PROXY protocol, is left out)
  --binary NAME=PATH  one more column: the burrowd binary at PATH (default relay), e.g.
               static=target/x86_64-unknown-linux-musl/release/burrowd; repeatable"
}

struct Options {
    runs: usize,
    bytes: u64,
    handshake_time: Duration,
    json: bool,
    only: Option<Vec<String>>,
    rules: usize,
    status: bool,
    proxy_header: Option<Version>,
    /// Other burrowd binaries to measure beside this build's, as (column name, path).
    binaries: Vec<(String, String)>,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut o = Options {
            runs: 3,
            bytes: 1 << 30,
            handshake_time: Duration::from_secs(3),
            json: false,
            only: None,
            rules: 0,
            status: false,
            proxy_header: None,
            binaries: Vec::new(),
        };
        // `cargo bench` passes `--bench` to harness-less benches; it means nothing here.
        let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--runs" => o.runs = value()?.parse().map_err(|_| "--runs: not a number")?,
                "--gib" => {
                    o.bytes = (value()?.parse::<f64>().map_err(|_| "--gib: not a number")? * (1u64 << 30) as f64) as u64
                }
                "--secs" => {
                    o.handshake_time = Duration::from_secs_f64(value()?.parse().map_err(|_| "--secs: not a number")?)
                }
                "--json" => o.json = true,
                "--only" => o.only = Some(value()?.split(',').map(str::to_owned).collect()),
                "--rules" => o.rules = value()?.parse().map_err(|_| "--rules: not a number")?,
                "--status" => o.status = true,
                "--proxy-protocol" => {
                    o.proxy_header = Some(match value()?.as_str() {
                        "v1" => Version::V1,
                        "v2" => Version::V2,
                        other => return Err(format!("--proxy-protocol: {other:?} is not v1 or v2")),
                    })
                }
                "--binary" => {
                    let spec = value()?;
                    let (name, path) = spec.split_once('=').ok_or("--binary: expected NAME=PATH")?;
                    if !std::path::Path::new(path).is_file() {
                        return Err(format!("--binary: no file at {path}"));
                    }
                    o.binaries.push((name.to_owned(), path.to_owned()));
                }
                "-h" | "--help" => return Err(usage().into()),
                _ => return Err(format!("unknown argument {arg}\n{}", usage())),
            }
        }
        o.runs = o.runs.max(1);
        Ok(o)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.as_ref().is_none_or(|list| list.iter().any(|s| s == scenario))
    }
}

fn main() {
    let opts = match Options::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    raise_descriptor_limit();
    let mut extra_args = Vec::new();
    if opts.rules > 0 {
        let file = write_rules(opts.rules);
        println!("burrowd runs with {} access rules (--rules {})", opts.rules, file.display());
        extra_args.extend(["--rules".to_owned(), file.display().to_string()]);
    }
    if opts.status {
        let status = free_port();
        println!("burrowd runs with --status {status}, read ten times a second");
        extra_args.extend(["--status".to_owned(), status.to_string()]);
        thread::spawn(move || read_status_pages(status));
    }
    if let Some(version) = opts.proxy_header {
        println!("burrowd runs with --proxy-protocol 127.0.0.1; every connection to it begins with a {version} header");
        extra_args.extend(["--proxy-protocol".to_owned(), "127.0.0.1".to_owned()]);
        PROXY_HEADER.set(version).expect("set once");
    }
    BURROWD_EXTRA_ARGS.set(extra_args).expect("set once");
    let servers = Servers::start();
    let mut kinds = vec![ProxyKind::Burrowd("splice"), ProxyKind::Burrowd("copy")];
    kinds.extend(opts.binaries.iter().map(|(name, path)| ProxyKind::Binary { name: name.clone(), path: path.clone() }));
    if opts.proxy_header.is_some() {
        eprintln!("--proxy-protocol: microsocks speaks no PROXY protocol; its column is left out");
    } else if Command::new("microsocks").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok() {
        kinds.push(ProxyKind::Microsocks);
    } else {
        eprintln!("microsocks not installed (apt-get install -y microsocks): its column is left out");
    }
    let mut routes = vec![None];
    routes.extend(kinds.into_iter().map(Some));
    let mut table = Table::new(routes, opts.json);
    eprintln!("{} runs per figure; each cell is median [min-max]", opts.runs);

    if opts.wants("throughput") {
        for streams in [1, 8] {
            let label = format!("throughput {streams} stream{} MiB/s", if streams > 1 { "s" } else { "" });
            let per_stream = opts.bytes / streams as u64;
            table.rows(&[&label], |route| {
                let proxy = route.as_ref().map(|k| Proxy::start(k, false));
                let via = proxy.as_ref().map(|p| p.addr);
                vec![Samples::collect(opts.runs, || throughput(via, servers.sink, streams, per_stream))]
            });
        }
    }
    if opts.wants("handshake") {
        let labels = [
            "handshake sessions/s",
            "handshake latency p50 us",
            "handshake latency p99 us",
            "handshakes per proxy CPU-s",
            "handshake sessions/s, localhost",
            "handshakes per proxy CPU-s, localhost",
        ];
        table.rows(&labels, |route| {
            let proxy = route.as_ref().map(|k| Proxy::start(k, false));
            let via = proxy.as_ref().map(|p| p.addr);
            let mut figures = vec![Samples::default(); labels.len()];
            for _ in 0..opts.runs {
                // The same loop to an IPv4 literal, then to `localhost` (two addresses).
                for (dest, first) in [(Dest::Ip(servers.echo), 0), (Dest::Localhost(servers.echo.port()), 4)] {
                    let cpu_before = proxy.as_ref().map(Proxy::cpu_seconds);
                    let (rate, latencies) = handshake_rate(via, Handshake::Socks5, dest, opts.handshake_time);
                    let cpu = proxy.as_ref().zip(cpu_before).map(|(p, before)| p.cpu_seconds() - before);
                    figures[first].push(rate);
                    if first == 0 {
                        figures[1].push(latencies.percentile(0.5));
                        figures[2].push(latencies.percentile(0.99));
                    }
                    if let Some(cpu) = cpu.filter(|cpu| *cpu > 0.0) {
                        figures[first + if first == 0 { 3 } else { 1 }].push(latencies.0.len() as f64 / cpu);
                    }
                }
            }
            figures
        });
        // The same loop through the HTTP side of burrowd's port: CONNECT, 200, echo.
        let labels = ["HTTP CONNECT sessions/s", "HTTP CONNECT latency p50 us", "HTTP CONNECT latency p99 us"];
        table.rows(&labels, |route| {
            let mut figures = vec![Samples::default(); 3];
            if !matches!(route, Some(ProxyKind::Burrowd(_))) {
                return figures;
            }
            let proxy = route.as_ref().map(|k| Proxy::start(k, false));
            let via = proxy.as_ref().map(|p| p.addr);
            for _ in 0..opts.runs {
                let (rate, latencies) =
                    handshake_rate(via, Handshake::HttpConnect, Dest::Ip(servers.echo), opts.handshake_time);
                figures[0].push(rate);
                figures[1].push(latencies.percentile(0.5));
                figures[2].push(latencies.percentile(0.99));
            }
            figures
        });
    }
    if opts.wants("syscalls") {
        if strace_installed() {
            let labels = [
                "syscalls per CONNECT session",
                "futex per CONNECT session",
                "sched_yield per CONNECT session",
                "syscalls per CONNECT session, localhost",
            ];
            table.rows(&labels, |route| match &route {
                None => vec![Samples::default(); labels.len()],
                Some(kind) => {
                    let closer = servers.closer;
                    let ip = syscalls_per_session(kind, Dest::Ip(closer));
                    let name = syscalls_per_session(kind, Dest::Localhost(closer.port()));
                    let one = |value: Option<f64>| Samples(value.into_iter().collect());
                    vec![
                        one(ip.as_ref().map(|calls| calls.total)),
                        one(ip.as_ref().map(|calls| calls.named("futex"))),
                        one(ip.as_ref().map(|calls| calls.named("sched_yield"))),
                        one(name.as_ref().map(|calls| calls.total)),
                    ]
                }
            });
        } else {
            eprintln!("strace not installed (apt-get install -y strace): no syscall counts");
        }
    }
    if opts.wants("pingpong") {
        for pinned in [false, true] {
            let tag = if pinned { "pinned" } else { "unpinned" };
            let labels = [format!("64B ping-pong p50 us {tag}"), format!("64B ping-pong p99 us {tag}")];
            table.rows(&[&labels[0], &labels[1]], |route| {
                let proxy = route.as_ref().map(|k| Proxy::start(k, pinned));
                let via = proxy.as_ref().map(|p| p.addr);
                let mut figures = vec![Samples::default(); 2];
                for _ in 0..opts.runs {
                    let latencies = ping_pong(via, pinned);
                    figures[0].push(latencies.percentile(0.5));
                    figures[1].push(latencies.percentile(0.99));
                }
                figures
            });
        }
    }
    if opts.wants("memory") {
        memory(&mut table, &servers, opts.runs);
    }
    if opts.wants("udp") {
        let echo = udp_echo_server();
        table.rows(&["UDP 64B packets/s, window 64", "UDP packets lost"], |route| {
            let proxy = route.as_ref().map(|k| Proxy::start(k, false));
            let mut figures = vec![Samples::default(); 2];
            for _ in 0..opts.runs {
                match udp_rate(proxy.as_ref().map(|p| p.addr), echo) {
                    Ok((rate, lost)) => {
                        figures[0].push(rate);
                        figures[1].push(lost as f64);
                    }
                    Err(e) => eprintln!("UDP through {}: {e}", route_name(route.as_ref())),
                }
            }
            figures
        });
    }
    table.print_ratios();
}

// ---------------------------------------------------------------------------------------
// Figures: samples, medians, the table

#[derive(Default, Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn collect(runs: usize, mut run: impl FnMut() -> f64) -> Samples {
        Samples((0..runs).map(|_| run()).collect())
    }
    fn push(&mut self, v: f64) {
        self.0.push(v);
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
    }
    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// Latencies of one run, in microseconds.
struct Latencies(Vec<f64>);

impl Latencies {
    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}
use Better::{Higher, Lower};

/// Rows of figures, one column per route; printed as they complete so a long run shows
/// progress, and kept for the ratio summary at the end.
struct Table {
    /// One column each: `None` is the direct connection.
    routes: Vec<Option<ProxyKind>>,
    json: bool,
    rows: Vec<(String, Vec<Samples>)>,
    header_printed: bool,
}

impl Table {
    fn new(routes: Vec<Option<ProxyKind>>, json: bool) -> Table {
        Table { routes, json, rows: Vec::new(), header_printed: false }
    }

    fn header(&mut self) {
        if !self.header_printed {
            let mut line = format!("{:<40}", "figure");
            for r in &self.routes {
                line += &format!(" {:>24}", route_name(r.as_ref()));
            }
            println!("{line}");
            self.header_printed = true;
        }
    }

    /// Measures every route once; `measure` returns one set of samples per label.
    fn rows(&mut self, labels: &[&str], mut measure: impl FnMut(Option<ProxyKind>) -> Vec<Samples>) {
        let per_route: Vec<Vec<Samples>> = self.routes.clone().into_iter().map(&mut measure).collect();
        for (i, label) in labels.iter().enumerate() {
            self.emit(label, per_route.iter().map(|figures| figures[i].clone()).collect());
        }
    }

    fn emit(&mut self, label: &str, cells: Vec<Samples>) {
        self.header();
        let mut line = format!("{label:<40}");
        for (route, s) in self.routes.iter().zip(&cells) {
            line += &format!(" {:>24}", cell(s));
            if self.json {
                println!(
                    "{{\"figure\":\"{label}\",\"route\":\"{}\",\"median\":{:.3},\"min\":{:.3},\"max\":{:.3},\"runs\":{}}}",
                    route_name(route.as_ref()),
                    s.median(),
                    s.min(),
                    s.max(),
                    s.0.len()
                );
            }
        }
        println!("{line}");
        self.rows.push((label.to_owned(), cells));
    }

    fn median(&self, label: &str, route: &str) -> Option<f64> {
        let col = self.routes.iter().position(|r| route_name(r.as_ref()) == route)?;
        let (_, cells) = self.rows.iter().find(|(l, _)| l == label)?;
        Some(cells[col].median()).filter(|v| v.is_finite())
    }

    /// The targets, each as a ratio of two medians from this run.
    fn print_ratios(&self) {
        let checks: [(&str, &str, &str, &str, f64, Better); 13] = [
            ("1-stream throughput vs direct", "throughput 1 stream MiB/s", "burrowd", "direct", 0.75, Higher),
            ("8-stream throughput vs direct", "throughput 8 streams MiB/s", "burrowd", "direct", 0.5, Higher),
            ("handshake rate vs microsocks", "handshake sessions/s", "burrowd", "microsocks", 1.2, Higher),
            ("handshakes/CPU-s vs microsocks", "handshakes per proxy CPU-s", "burrowd", "microsocks", 1.3, Higher),
            (
                "handshakes/CPU-s vs microsocks, localhost",
                "handshakes per proxy CPU-s, localhost",
                "burrowd",
                "microsocks",
                1.3,
                Higher,
            ),
            ("syscalls per CONNECT session", "syscalls per CONNECT session", "burrowd", "", 30.0, Lower),
            ("sched_yield per CONNECT session", "sched_yield per CONNECT session", "burrowd", "", 0.0, Lower),
            (
                "syscalls per CONNECT session, localhost",
                "syscalls per CONNECT session, localhost",
                "burrowd",
                "",
                30.0,
                Lower,
            ),
            ("pinned RTT p50 vs direct", "64B ping-pong p50 us pinned", "burrowd", "direct", 2.2, Lower),
            ("KiB RSS per idle session", "KiB RSS/session @5000", "burrowd", "", 16.0, Lower),
            ("MiB RSS with 5000 sessions", "RSS MiB @5000", "burrowd", "", 100.0, Lower),
            ("UDP packets/s vs direct", "UDP 64B packets/s, window 64", "burrowd", "direct", 0.5, Higher),
            ("UDP packets lost", "UDP packets lost", "burrowd", "", 0.0, Lower),
        ];
        let copy = ProxyKind::Burrowd("copy").name();
        let http_vs_socks =
            self.median("HTTP CONNECT sessions/s", &copy).zip(self.median("handshake sessions/s", &copy));
        if let Some((http, socks)) = http_vs_socks {
            println!();
            println!(
                "{:<42} {:>12.2} (no target; HTTP CONNECT rate / SOCKS5 rate)",
                "HTTP CONNECT vs SOCKS5 handshakes",
                http / socks
            );
        }
        println!();
        println!("{:<42} {:>12} {:>12} {:>10}", "target (burrowd = default, copy)", "measured", "target", "");
        for (name, label, a, b, target, better) in checks {
            let a_route = if a == "burrowd" { ProxyKind::Burrowd("copy").name() } else { a.to_owned() };
            let value = match (self.median(label, &a_route), b) {
                (Some(x), "") => Some(x),
                (Some(x), b) => self.median(label, b).map(|y| x / y),
                (None, _) => None,
            };
            let (sign, ok) = match (better, value) {
                (Higher, Some(v)) => (">=", v >= target),
                (Lower, Some(v)) => ("<=", v <= target),
                (_, None) => ("", false),
            };
            match value {
                Some(v) => println!(
                    "{name:<42} {v:>12.2} {:>12} {:>10}",
                    format!("{sign} {target}"),
                    if ok { "met" } else { "MISSED" }
                ),
                None => println!("{name:<42} {:>12}", "not measured"),
            }
        }
    }
}

fn cell(s: &Samples) -> String {
    if s.0.is_empty() {
        return "-".into();
    }
    let f = |v: f64| if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") };
    format!("{} [{}-{}]", f(s.median()), f(s.min()), f(s.max()))
}

// ---------------------------------------------------------------------------------------
// The proxies under test

#[derive(Clone, PartialEq)]
enum ProxyKind {
    /// This build's burrowd with this `--relay` mode.
    Burrowd(&'static str),
    /// Another burrowd binary (`--binary NAME=PATH`), with its default relay.
    Binary {
        name: String,
        path: String,
    },
    Microsocks,
}

impl ProxyKind {
    fn name(&self) -> String {
        match self {
            ProxyKind::Burrowd(mode) => format!("burrowd {mode}"),
            ProxyKind::Binary { name, .. } => name.clone(),
            ProxyKind::Microsocks => "microsocks".into(),
        }
    }

    fn program(&self) -> &str {
        match self {
            ProxyKind::Burrowd(_) => BURROWD,
            ProxyKind::Binary { path, .. } => path,
            ProxyKind::Microsocks => "microsocks",
        }
    }
}

fn route_name(route: Option<&ProxyKind>) -> String {
    route.map_or("direct".into(), ProxyKind::name)
}

/// A proxy child process on a free loopback port; killed when dropped.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Proxy {
    /// With `pinned`, the proxy runs on CPU 0 only (taskset), like the pinned load generator.
    fn start(kind: &ProxyKind, pinned: bool) -> Proxy {
        let taskset = ["taskset", "-c", "0"].map(String::from);
        Proxy::start_under(kind, if pinned { &taskset } else { &[] })
    }

    /// Starts the proxy as the last argument of `wrapper` (a program and its arguments).
    fn start_under(kind: &ProxyKind, wrapper: &[String]) -> Proxy {
        let addr = free_port();
        let port = addr.port().to_string();
        let mut command = match wrapper {
            [program, args @ ..] => {
                let mut command = Command::new(program);
                command.args(args).arg(kind.program());
                command
            }
            [] => Command::new(kind.program()),
        };
        // -q: no per-session log line, as microsocks writes none; max-clients above the
        // 5,000 idle sessions of the memory figure, all from one address.
        let burrowd_args =
            ["-q", "--listen", &addr.to_string(), "--max-clients", "6000", "--max-clients-per-ip", "6000"];
        match kind {
            ProxyKind::Burrowd(mode) => {
                command.args(burrowd_args).args(["--relay", mode]).args(BURROWD_EXTRA_ARGS.get().into_iter().flatten())
            }
            ProxyKind::Binary { .. } => command.args(burrowd_args).args(BURROWD_EXTRA_ARGS.get().into_iter().flatten()),
            ProxyKind::Microsocks => command.args(["-i", "127.0.0.1", "-p", &port]),
        };
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        let child = child.unwrap_or_else(|e| panic!("cannot start {}: {e}", kind.name()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "{} did not start listening on {addr}", kind.name());
            thread::sleep(Duration::from_millis(10));
        }
        Proxy { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user and system) the proxy has used so far, from /proc/PID/stat.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The fields after the command name, which is in parentheses: utime and stime are
        // the 12th and 13th, in clock ticks (USER_HZ, 100 on Linux).
        let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
        (ticks(11) + ticks(12)) / 100.0
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address nobody listens on right now.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// Raises this process's soft descriptor limit (inherited by the proxies) for the 5,000
/// idle sessions: each holds a client and a target socket here and two in the proxy.
fn raise_descriptor_limit() {
    let pid = std::process::id().to_string();
    let limit = format!("--nofile={NOFILE}:{NOFILE}");
    match Command::new("prlimit").args(["--pid", &pid, &limit]).status() {
        Ok(status) if status.success() => {}
        other => eprintln!("could not raise the descriptor limit to {NOFILE} ({other:?}); the memory figure may fail"),
    }
}

// ---------------------------------------------------------------------------------------
// The benchmark's own loopback servers

struct Servers {
    /// Reads the byte count a client announces (8 bytes, big-endian), then that many bytes,
    /// then answers one byte. (Not EOF: microsocks does not pass a half-close on.)
    sink: SocketAddr,
    /// Echoes until EOF.
    echo: SocketAddr,
    /// Accepts and closes at once.
    closer: SocketAddr,
    /// Accepts and keeps connections without touching them: the targets of idle sessions.
    hold: SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Servers {
    fn start() -> Servers {
        let sink = serve(16, |mut s| {
            let mut announced = [0u8; 8];
            if s.read_exact(&mut announced).is_err() {
                return;
            }
            let mut left = u64::from_be_bytes(announced);
            let mut buf = vec![0u8; STREAM_CHUNK];
            while left > 0 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left = left.saturating_sub(n as u64),
                }
            }
            let _ = s.write_all(b"k");
        });
        // More echo threads than handshake workers, so no session waits for one.
        let echo = serve(HANDSHAKE_WORKERS + 8, echo);
        let closer = serve(2, drop);
        let held = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hold server");
        let hold = listener.local_addr().expect("local_addr");
        let keep = Arc::clone(&held);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                keep.lock().unwrap().push(stream);
            }
        });
        Servers { sink, echo, closer, hold, held }
    }
}

/// A server whose `threads` threads each accept and serve one connection at a time:
/// no thread is spawned per connection, which would cost more than what is measured.
fn serve(threads: usize, handle: fn(TcpStream)) -> SocketAddr {
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").expect("bind server"));
    let addr = listener.local_addr().expect("local_addr");
    for _ in 0..threads {
        let listener = Arc::clone(&listener);
        thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let _ = stream.set_nodelay(true);
                    handle(stream);
                }
            })
            .expect("spawn server thread");
    }
    addr
}

fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Pins the calling thread to CPU 0 (taskset on its thread id).
fn pin_this_thread() {
    let tid = std::fs::read_link("/proc/thread-self").ok().and_then(|p| p.file_name().map(|n| n.to_owned()));
    let ok = tid.is_some_and(|tid| {
        Command::new("taskset")
            .args(["-p", "-c", "0"])
            .arg(tid)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        eprintln!("could not pin a thread with taskset; pinned figures are unpinned");
    }
}

// ---------------------------------------------------------------------------------------
// Clients

/// Where a client asks the proxy to connect.
#[derive(Clone, Copy)]
enum Dest {
    Ip(SocketAddr),
    /// The name `localhost` (127.0.0.1 and ::1) and this port; directly, 127.0.0.1.
    Localhost(u16),
}

impl Dest {
    fn direct(self) -> SocketAddr {
        match self {
            Dest::Ip(addr) => addr,
            Dest::Localhost(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

/// Connects to `target`, through the SOCKS5 proxy at `via` when given (no authentication,
/// IPv4 CONNECT). Each step is its own write, as a simple client does.
fn connect(via: Option<SocketAddr>, target: SocketAddr) -> io::Result<TcpStream> {
    connect_with(via, Handshake::Socks5, Dest::Ip(target))
}

/// How a benchmark client asks the proxy for its target.
#[derive(Clone, Copy)]
enum Handshake {
    /// Greeting (no auth), then CONNECT to the IPv4 address or the name.
    Socks5,
    /// `CONNECT 127.0.0.1:PORT HTTP/1.1`, read up to the end of the 200's head.
    HttpConnect,
}

/// Connects to `dest`, through the proxy at `via` when given, asking for it as `handshake`
/// says. Each step is its own write, as a simple client does.
fn connect_with(via: Option<SocketAddr>, handshake: Handshake, dest: Dest) -> io::Result<TcpStream> {
    let target = dest.direct();
    let mut s = TcpStream::connect(via.unwrap_or(target))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    // With --proxy-protocol, a header goes ahead of the client's first bytes, in the same
    // write, as a balancer's header and its client's first bytes usually arrive.
    let mut first = Vec::with_capacity(V1_MAX_LEN + 64);
    if let (Some(&version), Some(SocketAddr::V4(destination)), SocketAddr::V4(source)) =
        (PROXY_HEADER.get(), via, s.local_addr()?)
    {
        let mut header = [0u8; V1_MAX_LEN];
        let len = Header::Proxied { version, addresses: Addresses::V4 { source, destination } }.emit(&mut header);
        first.extend_from_slice(&header[..len]);
    }
    if via.is_some() && matches!(handshake, Handshake::HttpConnect) {
        first.extend_from_slice(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes());
        s.write_all(&first)?;
        const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
        let mut reply = [0u8; ESTABLISHED.len()];
        s.read_exact(&mut reply)?;
        if reply != ESTABLISHED {
            return Err(io::Error::other(format!("CONNECT reply {:?}", String::from_utf8_lossy(&reply))));
        }
    } else if via.is_some() {
        first.extend_from_slice(&[5, 1, 0]);
        s.write_all(&first)?;
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice)?;
        if choice != [5, 0] {
            return Err(io::Error::other(format!("method choice {choice:?}")));
        }
        let mut request = vec![5, 1, 0];
        let port = match dest {
            Dest::Ip(SocketAddr::V4(v4)) => {
                request.push(1);
                request.extend_from_slice(&v4.ip().octets());
                v4.port()
            }
            Dest::Ip(SocketAddr::V6(_)) => unreachable!("targets are 127.0.0.1"),
            Dest::Localhost(port) => {
                request.extend_from_slice(&[3, 9]);
                request.extend_from_slice(b"localhost");
                port
            }
        };
        request.extend_from_slice(&port.to_be_bytes());
        s.write_all(&request)?;
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply)?;
        if reply[..4] != [5, 0, 0, 1] {
            return Err(io::Error::other(format!("CONNECT reply {reply:?}")));
        }
    }
    Ok(s)
}

/// MiB/s moving `per_stream` bytes on each of `streams` connections at once, from the
/// first byte sent to the sink's acknowledgement of the last.
fn throughput(via: Option<SocketAddr>, sink: SocketAddr, streams: usize, per_stream: u64) -> f64 {
    let start_line = Arc::new(Barrier::new(streams + 1));
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            let start_line = Arc::clone(&start_line);
            thread::spawn(move || {
                let mut s = connect(via, sink).expect("connect for throughput");
                let chunk = vec![0x5au8; STREAM_CHUNK];
                start_line.wait();
                s.write_all(&per_stream.to_be_bytes()).expect("announce stream length");
                let mut left = per_stream;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    s.write_all(&chunk[..n]).expect("write stream");
                    left -= n as u64;
                }
                let mut ack = [0u8; 1];
                s.read_exact(&mut ack).unwrap_or_else(|e| panic!("sink acknowledgement via {via:?}: {e}"));
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    for w in workers {
        w.join().expect("throughput stream");
    }
    (per_stream * streams as u64) as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64()
}

/// Sessions per second with 16 workers each looping connect → (greeting → CONNECT, or an
/// HTTP CONNECT) → 1-byte echo → close for `duration`, and every session's latency.
fn handshake_rate(via: Option<SocketAddr>, handshake: Handshake, echo: Dest, duration: Duration) -> (f64, Latencies) {
    let start = Instant::now();
    let failed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..HANDSHAKE_WORKERS)
        .map(|_| {
            let failed = Arc::clone(&failed);
            thread::spawn(move || {
                let mut latencies = Vec::new();
                while start.elapsed() < duration && latencies.len() < MAX_SESSIONS_PER_WORKER {
                    let began = Instant::now();
                    let session = connect_with(via, handshake, echo).and_then(|mut s| {
                        s.write_all(b"x")?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b)
                    });
                    match session {
                        Ok(()) => latencies.push(began.elapsed().as_secs_f64() * 1e6),
                        Err(e) => {
                            if !failed.swap(true, Ordering::Relaxed) {
                                eprintln!("handshake session failed: {e}");
                            }
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.join().expect("handshake worker"));
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    (rate, Latencies(all))
}

/// Round-trip times of 64-byte messages on one connection to a fresh echo thread; with
/// `pinned`, client and echo thread run on CPU 0 (the proxy is pinned by its caller).
fn ping_pong(via: Option<SocketAddr>, pinned: bool) -> Latencies {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind ping-pong echo");
    let target = listener.local_addr().expect("local_addr");
    let server = thread::spawn(move || {
        if pinned {
            pin_this_thread();
        }
        if let Ok((s, _)) = listener.accept() {
            let _ = s.set_nodelay(true);
            echo(s);
        }
    });
    let rtts = thread::scope(|scope| {
        scope
            .spawn(|| {
                if pinned {
                    pin_this_thread();
                }
                let mut s = connect(via, target).expect("connect for ping-pong");
                let msg = [0x42u8; PING_SIZE];
                let mut back = [0u8; PING_SIZE];
                let mut rtts = Vec::with_capacity(PING_ROUNDS);
                for _ in 0..PING_ROUNDS {
                    let began = Instant::now();
                    s.write_all(&msg).expect("ping");
                    s.read_exact(&mut back).expect("pong");
                    rtts.push(began.elapsed().as_secs_f64() * 1e6);
                }
                rtts
            })
            .join()
            .expect("ping-pong client")
    });
    let _ = server.join();
    Latencies(rtts)
}

// ---------------------------------------------------------------------------------------
// System calls per session

fn strace_installed() -> bool {
    Command::new("strace").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// What `strace -c` counted, per session.
struct SyscallCounts {
    total: f64,
    by_name: Vec<(String, f64)>,
}

impl SyscallCounts {
    fn named(&self, name: &str) -> f64 {
        self.by_name.iter().find(|(n, _)| n == name).map_or(0.0, |(_, calls)| *calls)
    }
}

/// System calls per sequential CONNECT session to `dest` (a server that closes at once),
/// counted by `strace -f -c` over the proxy's threads: the difference between a run of
/// `STRACED_SESSIONS[1]` sessions and one of `STRACED_SESSIONS[0]`, so that what start-up
/// and exit cost cancels out.
fn syscalls_per_session(kind: &ProxyKind, dest: Dest) -> Option<SyscallCounts> {
    let [short, long] = STRACED_SESSIONS.map(|sessions| straced_run(kind, dest, sessions));
    let (short, long) = (short?, long?);
    let sessions = (STRACED_SESSIONS[1] - STRACED_SESSIONS[0]) as f64;
    let per_session = |name: &str| {
        let count = |calls: &[(String, u64)]| calls.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c);
        (count(&long) as f64 - count(&short) as f64) / sessions
    };
    let mut by_name: Vec<(String, f64)> = long.iter().map(|(name, _)| (name.clone(), per_session(name))).collect();
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total = by_name.iter().map(|(_, calls)| calls).sum();
    eprintln!(
        "{} per session: {}",
        kind.name(),
        by_name.iter().filter(|(_, c)| *c >= 0.05).map(|(n, c)| format!("{n} {c:.2}")).collect::<Vec<_>>().join(", ")
    );
    Some(SyscallCounts { total, by_name })
}

/// Runs `sessions` sequential sessions through the proxy under `strace -f -c`, stops the
/// proxy with SIGTERM and returns strace's count per system call.
fn straced_run(kind: &ProxyKind, dest: Dest, sessions: usize) -> Option<Vec<(String, u64)>> {
    let file = std::env::temp_dir().join(format!("burrowd-bench-strace-{}", std::process::id()));
    let wrapper = ["strace", "-f", "-c", "-o"].map(String::from).into_iter().chain([file.display().to_string()]);
    let mut proxy = Proxy::start_under(kind, &wrapper.collect::<Vec<_>>());
    for _ in 0..sessions {
        let session = connect_with(Some(proxy.addr), Handshake::Socks5, dest).and_then(|mut s| s.read(&mut [0u8; 1]));
        if let Err(e) = session {
            eprintln!("{} under strace: {e}", kind.name());
            return None;
        }
    }
    // The traced proxy is strace's child; when it exits, strace writes its summary.
    let strace = proxy.pid();
    let traced = std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).ok()?;
    let traced = traced.split_whitespace().next()?.to_owned();
    let _ = Command::new("kill").args(["-TERM", &traced]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.child.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            eprintln!("{} did not stop on SIGTERM under strace", kind.name());
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let summary = std::fs::read_to_string(&file).ok()?;
    let _ = std::fs::remove_file(&file);
    // "% time  seconds  usecs/call  calls  [errors]  syscall"; the errors column may be empty.
    Some(
        summary
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let calls = fields.get(3)?.parse().ok()?;
                let name = *fields.last()?;
                (fields.first()?.parse::<f64>().is_ok() && name != "total").then(|| (name.to_owned(), calls))
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// Memory of idle sessions

/// What /proc says about a process.
struct ProcUsage {
    rss_kib: f64,
    threads: f64,
    fds: f64,
}

fn proc_usage(pid: u32) -> ProcUsage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as f64).unwrap_or(f64::NAN);
    ProcUsage { rss_kib: field("VmRSS:"), threads: field("Threads:"), fds }
}

fn memory(table: &mut Table, servers: &Servers, runs: usize) {
    let kinds = table.routes.clone();
    // Per count: RSS MiB, KiB/session, threads, descriptors, descriptors/session.
    let mut figures: Vec<[Vec<Samples>; 5]> = IDLE_COUNTS.iter().map(|_| Default::default()).collect();
    for route in &kinds {
        let mut per_count: Vec<[Samples; 5]> = IDLE_COUNTS.iter().map(|_| Default::default()).collect();
        if let Some(kind) = route {
            for _ in 0..runs {
                let proxy = Proxy::start(kind, false);
                thread::sleep(Duration::from_millis(100));
                let base = proc_usage(proxy.pid());
                let mut clients = Vec::new();
                for (i, &count) in IDLE_COUNTS.iter().enumerate() {
                    while clients.len() < count {
                        match connect(Some(proxy.addr), servers.hold) {
                            Ok(s) => clients.push(s),
                            Err(e) => {
                                eprintln!("{}: idle session {} failed: {e}", kind.name(), clients.len() + 1);
                                break;
                            }
                        }
                    }
                    // Let every relay thread reach its idle wait.
                    thread::sleep(Duration::from_millis(500));
                    let now = proc_usage(proxy.pid());
                    let n = clients.len() as f64;
                    let f = &mut per_count[i];
                    f[0].push(now.rss_kib / 1024.0);
                    f[1].push((now.rss_kib - base.rss_kib) / n);
                    f[2].push(now.threads);
                    f[3].push(now.fds);
                    f[4].push((now.fds - base.fds) / n);
                }
                drop(clients);
                drop(proxy);
                servers.held.lock().unwrap().clear();
            }
        }
        for (i, f) in per_count.into_iter().enumerate() {
            for (j, s) in f.into_iter().enumerate() {
                figures[i][j].push(s);
            }
        }
    }
    let names = ["RSS MiB", "KiB RSS/session", "threads", "descriptors", "descriptors/session"];
    for (i, count) in IDLE_COUNTS.iter().enumerate() {
        for (j, name) in names.iter().enumerate() {
            table.emit(&format!("{name} @{count}"), figures[i][j].clone());
        }
    }
}

// ---------------------------------------------------------------------------------------
// UDP through an association

/// Echoes every datagram to its sender.
fn udp_echo_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP echo");
    let addr = socket.local_addr().expect("local_addr");
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Datagrams echoed per second with up to 64 in flight, and how many were lost, sending
/// to `echo` directly or through a UDP association with the proxy at `via`.
fn udp_rate(via: Option<SocketAddr>, echo: SocketAddr) -> io::Result<(f64, usize)> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(UDP_LOSS_WAIT))?;
    // The association lives as long as this control connection.
    let mut _control = None;
    let mut datagram = Vec::new();
    let destination = match via {
        None => echo,
        Some(proxy) => {
            let (control, relay) = udp_associate(proxy, socket.local_addr()?)?;
            _control = Some(control);
            let SocketAddr::V4(v4) = echo else { unreachable!("targets are 127.0.0.1") };
            datagram.extend_from_slice(&[0, 0, 0, 1]);
            datagram.extend_from_slice(&v4.ip().octets());
            datagram.extend_from_slice(&v4.port().to_be_bytes());
            relay
        }
    };
    datagram.resize(datagram.len() + UDP_PAYLOAD, 0x5a);
    let mut buf = [0u8; 2048];
    let (mut sent, mut received, mut in_flight) = (0, 0, 0);
    let start = Instant::now();
    while sent < UDP_PACKETS && start.elapsed() < UDP_MAX_TIME {
        while in_flight < UDP_WINDOW && sent < UDP_PACKETS {
            socket.send_to(&datagram, destination)?;
            sent += 1;
            in_flight += 1;
        }
        match socket.recv_from(&mut buf) {
            Ok(_) => {
                received += 1;
                in_flight -= 1;
            }
            // Nothing for a while: what is in flight is gone.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => in_flight = 0,
            Err(e) => return Err(e),
        }
    }
    while in_flight > 0 && socket.recv_from(&mut buf).is_ok() {
        received += 1;
        in_flight -= 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    if received == 0 {
        return Err(io::Error::other("no datagram came back"));
    }
    Ok((received as f64 / elapsed, sent - received))
}

/// Opens a UDP association for a client sending from `from`; returns the control
/// connection and the relay address to send to.
fn udp_associate(proxy: SocketAddr, from: SocketAddr) -> io::Result<(TcpStream, SocketAddr)> {
    let mut s = TcpStream::connect(proxy)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice)?;
    let SocketAddr::V4(v4) = from else { unreachable!("the client is on 127.0.0.1") };
    let mut request = vec![5, 3, 0, 1];
    request.extend_from_slice(&v4.ip().octets());
    request.extend_from_slice(&v4.port().to_be_bytes());
    s.write_all(&request)?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply[..2])?;
    if reply[1] != 0 {
        return Err(io::Error::other(format!("UDP ASSOCIATE refused with reply code {}", reply[1])));
    }
    s.read_exact(&mut reply[2..])?;
    if reply[3] != 1 {
        return Err(io::Error::other("UDP ASSOCIATE reply is not IPv4"));
    }
    let ip = std::net::Ipv4Addr::new(reply[4], reply[5], reply[6], reply[7]);
    let port = u16::from_be_bytes([reply[8], reply[9]]);
    let ip = if ip.is_unspecified() { proxy.ip() } else { ip.into() };
    Ok((s, SocketAddr::new(ip, port)))
}
