//! The status listener (`--status ADDR`): a small HTTP/1.1 server on a thread of its own,
//! outside the worker pool so that it answers when every worker is busy. `GET /sessions`
//! is the live table, `GET /metrics` the Prometheus text format; GET and HEAD only, one
//! request per connection, each bounded in size and time.

#[cfg(unix)]
use crate::net::descriptors;
use crate::net::negotiation::close_after_reply;
use crate::net::worker_pool::WorkerPool;
use crate::session::Context;
use crate::session::live::State;
use crate::session::stats::Counters;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A request's head must arrive within this, and its answer leave within it too.
const REQUEST_TIME: Duration = Duration::from_secs(2);
/// The longest request head taken.
const MAX_REQUEST: usize = 8 * 1024;
/// Connections served at once: enough that a few idle ones delay no answer, few enough that
/// a flood of them holds a handful of threads.
const CONCURRENT_REQUESTS: usize = 8;
/// A request's thread builds one page of text at most.
const REQUEST_THREAD_STACK: usize = 256 * 1024;

/// What the status pages read.
pub(super) struct Status {
    pub(super) ctx: Arc<Context>,
    pub(super) workers: Arc<WorkerPool>,
    pub(super) started: SystemTime,
}

impl Status {
    /// Serves up to [`CONCURRENT_REQUESTS`] connections at once, each on a thread of its
    /// own and bounded by [`REQUEST_TIME`], so an idle connection delays no one's answer.
    /// Past that bound the next connection waits in the listen backlog until one of them
    /// ends, which an idle one does within [`REQUEST_TIME`].
    pub(super) fn run(self, listener: TcpListener) {
        let status = Arc::new(self);
        let slots = Arc::new(Slots::new(CONCURRENT_REQUESTS));
        loop {
            let slot = Slots::take(&slots);
            match listener.accept() {
                Ok((stream, _)) => {
                    let status = Arc::clone(&status);
                    let served = std::thread::Builder::new()
                        .name("burrowd-status".into())
                        .stack_size(REQUEST_THREAD_STACK)
                        .spawn(move || {
                            let _slot = slot;
                            if let Err(e) = status.answer(&stream) {
                                log::debug!("status request: {e}");
                            }
                        });
                    if let Err(e) = served {
                        log::debug!("status request: no thread to answer it ({e}); closed");
                    }
                }
                Err(e) => {
                    log::debug!("status accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn answer(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_write_timeout(Some(REQUEST_TIME))?;
        let response = match read_head(stream)? {
            Head::Request(method, path) => self.respond(&method, &path),
            Head::TooLong => Response::plain(431, "Request Header Fields Too Large", "request too long\n"),
            Head::Malformed => Response::plain(400, "Bad Request", "not an HTTP request\n"),
        };
        response.send(stream)?;
        // Unread request bytes would turn our close into a reset that loses the answer.
        close_after_reply(stream);
        Ok(())
    }

    fn respond(&self, method: &str, path: &str) -> Response {
        let head_only = match method {
            "GET" => false,
            "HEAD" => true,
            _ => return Response::plain(405, "Method Not Allowed", "GET or HEAD only\n"),
        };
        let mut response = match path {
            "/sessions" => Response::plain(200, "OK", &self.ctx.live.table()),
            "/metrics" => Response {
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                ..Response::plain(200, "OK", &self.metrics())
            },
            "/" => Response::plain(200, "OK", "burrowd status: /sessions, /metrics\n"),
            _ => Response::plain(404, "Not Found", "no such page: /sessions, /metrics\n"),
        };
        response.head_only(head_only);
        response
    }

    /// Every metric, in the Prometheus text format.
    fn metrics(&self) -> String {
        let mut out = Metrics::default();
        let counters = self.ctx.stats.counters();
        let mut active: BTreeMap<(String, String), u64> = BTreeMap::new();
        for live in self.ctx.live.snapshot() {
            let details = live.details();
            let command = match (details.state, details.command) {
                (State::Handshake, _) | (_, None) => "handshake".to_owned(),
                (_, Some(command)) => command,
            };
            *active.entry((live.service.to_string(), command)).or_default() += 1;
        }
        out.family("burrowd_sessions_active", "gauge", "Sessions open now, by service and command.");
        for ((service, command), count) in &active {
            out.sample("burrowd_sessions_active", &[("service", service), ("command", command)], *count);
        }
        self.counter_metrics(&mut out, &counters);
        let pool = self.workers.load();
        out.gauge("burrowd_workers_busy", "Workers running a session.", pool.busy as u64);
        out.gauge("burrowd_workers", "Workers started (they are kept once started).", pool.threads as u64);
        out.gauge("burrowd_workers_max", "The most workers there may be (--max-clients).", pool.max_threads as u64);
        out.gauge("burrowd_queue_length", "Clients waiting for a worker.", pool.queued as u64);
        #[cfg(unix)]
        if let Some(open) = descriptors::open_count() {
            out.gauge("burrowd_descriptors_open", "Descriptors this process holds.", open);
        }
        #[cfg(unix)]
        if let Some(limit) = descriptors::soft_limit() {
            out.gauge("burrowd_descriptors_limit", "The soft descriptor limit in force.", limit);
        }
        let started = self.started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        out.gauge("burrowd_start_time_seconds", "When burrowd started, in seconds since 1970.", started);
        out.text
    }

    fn counter_metrics(&self, out: &mut Metrics, counters: &Counters) {
        out.family("burrowd_sessions_total", "counter", "Sessions ended, by how they ended.");
        for (outcome, count) in &counters.sessions_by_outcome {
            out.sample("burrowd_sessions_total", &[("outcome", outcome.label())], *count);
        }
        out.family("burrowd_refusals_total", "counter", "Clients closed at once, by reason.");
        for (reason, count) in &counters.refused_by {
            out.sample("burrowd_refusals_total", &[("reason", reason.label())], *count);
        }
        out.counter(
            "burrowd_reclaimed_total",
            "Clients still in their handshake closed to make room for newer ones.",
            counters.reclaimed,
        );
        let login_failures = counters.sessions_by_outcome.iter().find(|(o, _)| o.label() == "login_failed");
        out.counter("burrowd_login_failures_total", "Failed logins.", login_failures.map_or(0, |(_, n)| *n));
        out.family("burrowd_socks_replies_total", "counter", "SOCKS replies sent, by version and code.");
        for (code, count) in &counters.socks5_replies {
            out.sample("burrowd_socks_replies_total", &[("version", "5"), ("code", &code.to_string())], *count);
        }
        for (code, count) in &counters.socks4_replies {
            out.sample("burrowd_socks_replies_total", &[("version", "4"), ("code", &code.to_string())], *count);
        }
        out.family("burrowd_http_replies_total", "counter", "HTTP proxy replies burrowd sent itself, by status.");
        for (status, count) in &counters.http_replies {
            out.sample("burrowd_http_replies_total", &[("status", &status.to_string())], *count);
        }
        out.family("burrowd_bytes_total", "counter", "Bytes relayed by sessions that have ended, by direction.");
        out.sample("burrowd_bytes_total", &[("direction", "up")], counters.bytes_up);
        out.sample("burrowd_bytes_total", &[("direction", "down")], counters.bytes_down);
        out.family("burrowd_udp_datagrams_total", "counter", "UDP datagrams relayed by ended sessions, by direction.");
        out.sample("burrowd_udp_datagrams_total", &[("direction", "up")], counters.udp_up);
        out.sample("burrowd_udp_datagrams_total", &[("direction", "down")], counters.udp_down);
        out.family("burrowd_udp_dropped_total", "counter", "UDP datagrams dropped by ended sessions, by reason.");
        for (reason, count) in &counters.udp_dropped {
            out.sample("burrowd_udp_dropped_total", &[("reason", reason.label())], *count);
        }
    }
}

/// Places for requests being served; a place goes back when its [`Slot`] is dropped.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Slot(Arc<Slots>);

impl Slots {
    fn new(count: usize) -> Self {
        Slots { free: Mutex::new(count), freed: Condvar::new() }
    }

    /// Waits until a place is free and takes it.
    fn take(slots: &Arc<Slots>) -> Slot {
        let mut free = slots.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = slots.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Slot(Arc::clone(slots))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// The Prometheus text format, written as it goes.
#[derive(Default)]
struct Metrics {
    text: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let labels: Vec<String> =
            labels.iter().map(|(key, value)| format!("{key}=\"{}\"", escape_label(value))).collect();
        let _ = writeln!(self.text, "{name}{{{}}} {value}", labels.join(","));
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        let _ = writeln!(self.text, "{name} {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        let _ = writeln!(self.text, "{name} {value}");
    }
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

enum Head {
    Request(String, String),
    TooLong,
    Malformed,
}

/// Reads a request's head (up to the blank line) within [`REQUEST_TIME`]; the body, if
/// any, is never read.
fn read_head(mut stream: &TcpStream) -> io::Result<Head> {
    let deadline = Instant::now() + REQUEST_TIME;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            return Ok(Head::TooLong);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk)? {
            0 => break,
            n => head.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.lines().next().unwrap_or("").split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(method), Some(path), Some(version)) if version.starts_with("HTTP/1.") => {
            Ok(Head::Request(method.to_owned(), path.to_owned()))
        }
        _ => Ok(Head::Malformed),
    }
}

struct Response {
    code: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
    /// For HEAD: the length of the body GET would send, which is not sent.
    withheld: Option<usize>,
}

impl Response {
    fn plain(code: u16, reason: &'static str, body: &str) -> Response {
        Response { code, reason, content_type: "text/plain; charset=utf-8", body: body.to_owned(), withheld: None }
    }

    /// For HEAD: the same head, with the length of the body that GET would send, and no body.
    fn head_only(&mut self, head_only: bool) {
        if head_only {
            self.withheld = Some(self.body.len());
            self.body.clear();
        }
    }

    fn send(&self, mut stream: &TcpStream) -> io::Result<()> {
        let length = self.withheld.unwrap_or(self.body.len());
        let allow = if self.code == 405 { "Allow: GET, HEAD\r\n" } else { "" };
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {length}\r\n{allow}Connection: close\r\n\r\n",
            self.code, self.reason, self.content_type
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(self.body.as_bytes())?;
        stream.flush()
    }
}
