//! The command line: flags to a [`Config`], and the help text that lists them.

use super::config_file;
use super::egress::Egress;
use super::rules::{Cidr, RuleSource, Rules, Verdict};
use super::service_url::{self, UrlError};
use super::units::{parse_duration, parse_size};
use super::users::Users;
use super::{Config, HopKind, RelayMode, ServiceSpec, Socks4Policy, SocksSpec};
use crate::config;
use crate::wire::printable::Printable;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Run(Box<Settings>),
    /// `--check`: everything was read and is valid; show the settings, start nothing.
    Check(Box<Settings>),
    Help,
    Version,
}

#[derive(Debug)]
pub struct Settings {
    pub config: Config,
    /// 0 is info; each -v adds one (debug, trace), each -q takes one (warn, error).
    pub verbosity: i8,
    /// `--log-time`: whether log lines start with a timestamp; `None` leaves it to where
    /// they go (none under systemd's journal, which stamps them itself).
    pub log_time: Option<bool>,
}

pub fn help() -> String {
    format!(
        "\
burrowd {version}: a SOCKS4/4a/5 and HTTP proxy server and port forwarder

Usage: burrowd [OPTIONS]

Options:
  -l, --listen ADDR:PORT       listen for SOCKS and HTTP proxy clients here (the first byte
                               tells them apart); repeatable, IPv6 as [::1]:1080
                               (default: {listen}, unless -L is given)
  -u, --user NAME:PASSWORD     require username/password login (SOCKS5, HTTP Basic) on --listen
                               services and accept this user; repeatable
  -L URL                       run one more service; repeatable:
                                 socks://[USER:PASS@]HOST:PORT    SOCKS4/4a/5 and HTTP proxy
                                 socks5://[USER:PASS@]HOST:PORT   SOCKS5 only
                                 http://[USER:PASS@]HOST:PORT     HTTP proxy only
                                 tcp://HOST:PORT/TARGET_HOST:TARGET_PORT
                                 udp://HOST:PORT/TARGET_HOST:TARGET_PORT?ttl=60s
                               HOST empty means all IPv4 addresses; IPv6 as [::]; any of them
                               may end in ?bind-out=IP&interface=NAME, its own egress
  -F socks5://[USER:PASS@]HOST:PORT, -F http://[USER:PASS@]HOST:PORT
                               send every outbound connection through this upstream SOCKS5
                               or HTTP proxy (reached with CONNECT: TCP only, so no BIND,
                               UDP or udp:// service through it); repeat to chain several,
                               first given is first hop
      --bind-out IP|same       send every outbound connection and datagram (CONNECT, BIND,
                               UDP, the hops of -F) from IP; repeatable, one IPv4 and one
                               IPv6 at most; with one family only, targets of the other are
                               refused (reply 3); same: from the address the client reached
                               (default: the routing table's choice)
      --interface NAME         bind every outbound socket to interface NAME (Linux, macOS)
                               (default: none)
      --users FILE             read users from FILE (UTF-8, LF or CRLF, a BOM dropped): one
                               NAME:PASSWORD per line, the password the rest of the line; a
                               line blank or starting with # (after any blanks) is skipped;
                               an empty password, a name given twice or no user at all is
                               an error; with -u, the later given wins a name; SIGHUP reads
                               it again and keeps the users in force if it is bad or empty
      --allow RULE, --deny RULE
                               access rules, repeatable, first match decides; RULE is any of
                               from CIDR, user NAME, cmd connect|bind|udp,
                               to CIDR|NAME|.DOMAIN|*, port N[-M] (all must match); with no
                               match the opposite of the last rule applies; a rule that
                               cannot be decided yet refuses; clients not on loopback may
                               not reach this host's own addresses unless a rule's `to`
                               names them
      --rules FILE             read more rules, one `allow RULE` or `deny RULE` per line,
                               placed where the flag stands (a file with no rule is an
                               error); SIGHUP reads it again and keeps the rules in force if
                               it is bad or empty
      --socks4                 serve SOCKS4/4a even when users are configured; SOCKS4 carries
                               no password, so anyone who can connect may use the proxy
                               (default: SOCKS4/4a served only when no users are configured)
      --no-socks4              refuse SOCKS4/4a: such clients are closed without a reply
                               (default: off)
      --no-http                refuse HTTP proxy requests on --listen and socks:// services:
                               such clients are closed without a reply (default: off)
      --max-clients N          worker threads, so sessions served at once (default: {max_clients});
                               when all are taken, a client still in its handshake is closed
                               to make room for a newcomer: the oldest of the address (or
                               IPv6 /64) holding the most such clients
      --max-clients-per-ip N   live sessions one client address may hold, an IPv6 client's
                               counted with its whole /64 and an IPv4-mapped one as its IPv4
                               address; past it, that address's oldest client still in its
                               handshake makes room, or the newcomer is closed (default: half
                               of --max-clients)
      --queue N                clients that wait for a worker when all are busy and none can
                               make room; more are closed at once, and so is one that waits
                               longer than --handshake-timeout (default: {queue})
      --handshake-timeout DUR  limit on the whole SOCKS negotiation or an HTTP client's
                               request head, and on a queued client's wait for a worker (default: {handshake:?})
      --connect-timeout DUR    limit on each outbound connection, all of a name's addresses
                               raced within it (default: {connect:?})
      --bind-timeout DUR       limit on waiting for the incoming connection of a BIND
                               (default: {bind:?})
      --idle-timeout DUR       close a session with no traffic either way for DUR; 0 is off
                               (default: 0)
      --half-close-timeout DUR once one side has closed its sending half, close the session
                               if the other direction moves nothing for DUR
                               (default: {half_close:?})
      --drain-timeout DUR      on SIGINT/SIGTERM, wait this long for sessions to finish
                               (default: {drain:?})
      --buffer-size BYTES      relay buffer (copy) or pipe (splice) per active direction
                               (default: {buffer})
      --relay splice|copy      how bytes are relayed: splice moves them through a kernel pipe
                               without copying them into burrowd (Linux only); copy reads and
                               writes through a buffer (default: {relay})
      --keepalive DUR          TCP keepalive idle time on both legs; 0 is off (default: {keepalive:?})
      --sndbuf BYTES           SO_SNDBUF for every TCP socket (default: the OS's)
      --rcvbuf BYTES           SO_RCVBUF for every TCP socket (default: the OS's)
      --udp-max-sessions N     client addresses each udp:// service serves at once, a thread
                               each; a datagram that would start one more is dropped
                               (default: {udp_sessions})
      --udp-max-sessions-per-ip N
                               of those, how many one client address may hold (default: half
                               of --udp-max-sessions)
      --udp-idle-timeout DUR   end a UDP association with no datagram either way for DUR;
                               0 is off (default: {udp_idle:?})
      --udp-port-range LO-HI   bind UDP relay sockets to a port in LO..=HI (default: any free port)
      --udp-advertise IP       put IP in UDP ASSOCIATE replies instead of the relay socket's own
                               address, for a server behind NAT (default: the relay's address)
      --udp-sndbuf BYTES       SO_SNDBUF for every UDP socket (default: the OS's)
      --udp-rcvbuf BYTES       SO_RCVBUF for every UDP socket (default: the OS's)
      --proxy-protocol CIDR    every TCP connection from these sources (load balancers) must
                               begin with a PROXY protocol header, v1 or v2, whose client
                               address then counts as the client's (rules, limits, logs);
                               one without a valid header is closed; repeatable (default: none)
      --status ADDR            serve live sessions (/sessions) and Prometheus metrics
                               (/metrics) over HTTP on ADDR, e.g. 127.0.0.1:9180; they show
                               clients, users and targets, so keep it on loopback
                               (default: off; SIGUSR1 logs the sessions table either way)
      --config FILE            read flags from FILE first, one per line without the leading
                               dashes (listen 0.0.0.0:1080); flags given here come after them
      --check                  read everything, print the settings burrowd would run with,
                               and exit (0 if valid, 2 if not) without listening
  -v, --verbose                more log output (-v debug, -vv trace); RUST_LOG overrides
  -q, --quiet                  less log output (-q warnings only, -qq errors only)
      --log-time off|on        start log lines with an RFC 3339 UTC timestamp (default: on,
                               except under systemd, whose journal stamps lines itself and
                               gets each line's priority as a <N> prefix instead)
  -h, --help                   print this help
  -V, --version                print the version

DUR is seconds, or a number with ms, s, m or h (500ms, 1.5s, 2m).
BYTES is a number, or with K or M (64K, 1M; powers of 1024).
N is a whole number up to {max_count}.
",
        version = env!("CARGO_PKG_VERSION"),
        listen = config::DEFAULT_LISTEN,
        max_clients = config::DEFAULT_MAX_CLIENTS,
        queue = config::DEFAULT_QUEUE,
        handshake = config::DEFAULT_HANDSHAKE_TIMEOUT,
        connect = config::DEFAULT_CONNECT_TIMEOUT,
        bind = config::DEFAULT_BIND_TIMEOUT,
        half_close = config::DEFAULT_HALF_CLOSE_TIMEOUT,
        drain = config::DEFAULT_DRAIN_TIMEOUT,
        buffer = config::DEFAULT_BUFFER_SIZE,
        relay = relay_name(config::DEFAULT_RELAY),
        keepalive = config::DEFAULT_KEEPALIVE,
        udp_idle = config::DEFAULT_UDP_IDLE_TIMEOUT,
        udp_sessions = config::DEFAULT_UDP_MAX_SESSIONS,
        max_count = config::MAX_COUNT,
    )
}

/// Flags that take no value. Every other flag takes one, so the command line can be split
/// into flags before any is applied: the config file's are applied first.
const NO_VALUE: [&str; 14] = [
    "-h",
    "--help",
    "-V",
    "--version",
    "-v",
    "--verbose",
    "-vv",
    "-q",
    "--quiet",
    "-qq",
    "--socks4",
    "--no-socks4",
    "--no-http",
    "--check",
];

/// A flag, its value, and where it was written: a config file's `FILE:LINE`, or `None` for
/// the command line.
#[derive(Debug)]
struct Arg {
    flag: String,
    value: Option<String>,
    at: Option<String>,
}

/// Parses the arguments after the program name, and the config file they name. An error
/// is one line that names the flag, and the file and line if it was written in one.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Action, String> {
    let command_line = split_command_line(args)?;
    for arg in &command_line {
        match arg.flag.as_str() {
            "-h" | "--help" => return Ok(Action::Help),
            "-V" | "--version" => return Ok(Action::Version),
            _ => {}
        }
    }
    let (mut check, mut config_path) = (false, None);
    let mut flags = Vec::new();
    for arg in command_line {
        match arg.flag.as_str() {
            "--check" if arg.value.is_some() => return Err("--check takes no value".into()),
            "--check" => check = true,
            "--config" => {
                let path = arg.value.ok_or("--config needs a value")?;
                if config_path.replace(path).is_some() {
                    return Err("--config may be given only once".into());
                }
            }
            _ => flags.push(arg),
        }
    }
    // The file's flags come first: a flag on the command line overrides a value set there,
    // and repeatable ones (listen, rules) follow the file's.
    let mut args = Vec::new();
    if let Some(path) = config_path {
        for line in config_file::read(Path::new(&path))? {
            args.push(Arg { flag: line.flag, value: line.value, at: Some(line.at) });
        }
    }
    args.extend(flags);
    let mut at = None;
    let settings = settings(args, &mut at).map_err(|e| match at {
        Some(at) => format!("{at}: {e}"),
        None => e,
    })?;
    Ok(if check { Action::Check(settings) } else { Action::Run(settings) })
}

/// `--flag=value` or `--flag value`, or a flag that takes none (see [`NO_VALUE`]).
fn split_command_line(args: impl IntoIterator<Item = OsString>) -> Result<Vec<Arg>, String> {
    let mut args = args.into_iter();
    let mut split = Vec::new();
    while let Some(arg) = args.next() {
        let arg = arg.into_string().map_err(|a| format!("argument {a:?} is not valid UTF-8"))?;
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg, None),
        };
        let value = match value {
            None if flag.starts_with('-') && !NO_VALUE.contains(&flag.as_str()) => args
                .next()
                .map(|v| v.into_string().map_err(|v| format!("{flag}: {v:?} is not valid UTF-8")))
                .transpose()?,
            value => value,
        };
        split.push(Arg { flag, value, at: None });
    }
    Ok(split)
}

/// Applies the flags in order. `at` follows the flag being applied, so that the caller
/// can say where an error was written.
fn settings(args: Vec<Arg>, at: &mut Option<String>) -> Result<Box<Settings>, String> {
    let mut config = Config::default();
    let mut listens = Vec::new();
    let mut url_services = Vec::new();
    let mut users = Users::default();
    let mut socks4 = None;
    let mut http = true;
    let mut egress = Egress::default();
    // Whether the --bind-out values so far came from the config file, which the command
    // line's replace rather than add to.
    let mut bind_out_in_file = false;
    let mut rule_sources = Vec::new();
    let mut verbosity: i8 = 0;
    let mut log_time = None;
    for Arg { flag, value: mut given, at: written_at } in args {
        *at = written_at;
        let mut value = || given.take().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            // The command line's were taken out by `parse`; in a file they make no sense,
            // and one config file naming another is refused rather than followed.
            "-h" | "--help" | "-V" | "--version" | "--config" | "--check" => {
                return Err(format!("{flag} is for the command line, not a config file"));
            }
            // Saturating: a script that repeats -v a thousand times still means "the most".
            "-v" | "--verbose" => verbosity = verbosity.saturating_add(1),
            "-vv" => verbosity = verbosity.saturating_add(2),
            "-q" | "--quiet" => verbosity = verbosity.saturating_sub(1),
            "-qq" => verbosity = verbosity.saturating_sub(2),
            "--log-time" => log_time = Some(parse_switch(&flag, &value()?)?),
            "-l" | "--listen" => listens.push(parse_listen(&value()?).map_err(|e| format!("--listen: {e}"))?),
            "-L" => {
                let url = value()?;
                let service = service_url::parse_service(&url)
                    .map_err(|e| url_error("-L", &url, service_url::parse_service, e))?;
                url_services.push(service);
            }
            "-F" => {
                let url = value()?;
                let hop = service_url::parse_hop(&url).map_err(|e| url_error("-F", &url, service_url::parse_hop, e))?;
                config.chain.push(hop);
            }
            "--bind-out" => {
                if bind_out_in_file && at.is_none() {
                    egress.bind = None;
                }
                bind_out_in_file = at.is_some();
                egress.add_bind_out(&value()?).map_err(|e| format!("{flag}: {e}"))?;
            }
            "--interface" => egress.set_interface(&value()?).map_err(|e| format!("{flag}: {e}"))?,
            "-u" | "--user" => users.add_entry(&value()?).map_err(|e| format!("--user: {e}"))?,
            "--users" => users.add_file(Path::new(&value()?)).map_err(|e| format!("--users: {e}"))?,
            "--allow" => rule_sources.push(rule_source(Verdict::Allow, value()?, at)),
            "--deny" => rule_sources.push(rule_source(Verdict::Deny, value()?, at)),
            "--rules" => rule_sources.push(RuleSource::File(value()?.into())),
            "--proxy-protocol" => {
                config.proxy_protocol.push(Cidr::parse(&value()?).map_err(|e| format!("{flag}: {e}"))?)
            }
            "--status" => config.status = Some(parse_listen(&value()?).map_err(|e| format!("--status: {e}"))?),
            "--socks4" => set_socks4(&mut socks4, Socks4Policy::On, at.is_some())?,
            "--no-socks4" => set_socks4(&mut socks4, Socks4Policy::Off, at.is_some())?,
            "--no-http" => http = false,
            "--max-clients" => config.max_clients = parse_count(&flag, &value()?, 1)?,
            "--queue" => config.queue = parse_count(&flag, &value()?, 0)?,
            "--max-clients-per-ip" => config.max_clients_per_ip = Some(parse_count(&flag, &value()?, 1)?),
            "--handshake-timeout" => config.handshake_timeout = parse_nonzero_duration(&flag, &value()?)?,
            "--connect-timeout" => config.connect_timeout = parse_nonzero_duration(&flag, &value()?)?,
            "--bind-timeout" => config.bind_timeout = parse_nonzero_duration(&flag, &value()?)?,
            "--idle-timeout" => config.idle_timeout = optional(flag_duration(&flag, &value()?)?),
            "--half-close-timeout" => config.half_close_timeout = parse_nonzero_duration(&flag, &value()?)?,
            "--drain-timeout" => config.drain_timeout = flag_duration(&flag, &value()?)?,
            "--buffer-size" => config.buffer_size = parse_size(&value()?).map_err(|e| format!("{flag}: {e}"))?.max(1),
            "--relay" => config.relay = parse_relay(&value()?)?,
            "--keepalive" => config.socket.keepalive = optional(flag_duration(&flag, &value()?)?),
            "--sndbuf" => config.socket.sndbuf = Some(parse_size(&value()?).map_err(|e| format!("{flag}: {e}"))?),
            "--rcvbuf" => config.socket.rcvbuf = Some(parse_size(&value()?).map_err(|e| format!("{flag}: {e}"))?),
            "--udp-max-sessions" => config.udp_max_sessions = parse_count(&flag, &value()?, 1)?,
            "--udp-max-sessions-per-ip" => config.udp_max_sessions_per_ip = Some(parse_count(&flag, &value()?, 1)?),
            "--udp-idle-timeout" => config.udp.idle_timeout = optional(flag_duration(&flag, &value()?)?),
            "--udp-port-range" => {
                config.udp.port_range = Some(parse_port_range(&value()?).map_err(|e| format!("{flag}: {e}"))?)
            }
            "--udp-advertise" => {
                let text = value()?;
                let ip = text.parse::<IpAddr>().map_err(|_| format!("{flag}: {text:?} is not an IP address"))?;
                config.udp.advertise = Some(ip);
            }
            "--udp-sndbuf" => config.udp.sndbuf = Some(parse_size(&value()?).map_err(|e| format!("{flag}: {e}"))?),
            "--udp-rcvbuf" => config.udp.rcvbuf = Some(parse_size(&value()?).map_err(|e| format!("{flag}: {e}"))?),
            _ if flag.starts_with('-') => return Err(format!("unknown option {}", Printable(&flag))),
            _ => return Err(format!("unexpected argument {}", Printable(&flag))),
        }
        if given.is_some() {
            return Err(format!("{flag} takes no value"));
        }
    }
    *at = None;
    if listens.is_empty() && url_services.is_empty() {
        listens.push(config::DEFAULT_LISTEN.parse().expect("valid default"));
    }
    let socks4 = socks4.map_or(Socks4Policy::Auto, |(policy, _)| policy);
    config.services = listens
        .into_iter()
        .map(|addr| ServiceSpec::Socks(SocksSpec { users: users.clone(), socks4, ..SocksSpec::new(addr) }))
        .chain(url_services)
        .collect();
    for service in &mut config.services {
        // Only on mixed ports: an http:// service is there for HTTP.
        if let ServiceSpec::Socks(spec) = service
            && spec.socks5
        {
            spec.http &= http;
        }
        // A service's own ?bind-out= and ?interface= win over the flags'.
        let own = std::mem::take(service.egress_mut());
        *service.egress_mut() = own.or(&egress);
    }
    if let Some((index, hop)) = config.chain.iter().enumerate().find(|(_, hop)| hop.kind == HopKind::Http)
        && let Some(udp) = config.services.iter().find(|s| matches!(s, ServiceSpec::UdpForward(_)))
    {
        return Err(format!(
            "-L udp://{}: hop {} of -F ({hop}) is an HTTP proxy, which carries TCP only",
            udp.listen_addr(),
            index + 1
        ));
    }
    config.rules = Rules::load(rule_sources)?;
    Ok(Box::new(Settings { config, verbosity, log_time }))
}

/// `on` or `off`.
fn parse_switch(flag: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{flag}: {} is neither on nor off", Printable(value))),
    }
}

/// A rule is named by its flag on the command line, by its line in a config file.
fn rule_source(verdict: Verdict, rule: String, at: &Option<String>) -> RuleSource {
    match at {
        Some(at) => RuleSource::Line(verdict, rule, at.clone()),
        None => RuleSource::Flag(verdict, rule),
    }
}

/// One line naming the flag and its value, with whatever may be a password hidden however
/// malformed the value is. The reason is what the value gives with the password hidden, so
/// no part of a password can reach it either; a fault in the password itself is said in
/// words alone.
fn url_error<T>(flag: &str, url: &str, parse: fn(&str) -> Result<T, UrlError>, error: UrlError) -> String {
    let shown = service_url::redacted(url);
    let error = parse(&shown).err().unwrap_or(error);
    format!("{flag} {}: {error}", Printable(&shown))
}

/// `--socks4` and `--no-socks4` contradict each other in one place, but the command line
/// overrides the config file, as it does any other flag; saying one twice is fine.
fn set_socks4(policy: &mut Option<(Socks4Policy, bool)>, wanted: Socks4Policy, in_file: bool) -> Result<(), String> {
    match policy.replace((wanted, in_file)) {
        Some((earlier, earlier_in_file)) if earlier != wanted && earlier_in_file == in_file => {
            Err("--socks4 and --no-socks4 cannot both be given".into())
        }
        _ => Ok(()),
    }
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("{text:?} is not ADDR:PORT (IPv6 as [::1]:1080)"))
}

fn parse_relay(text: &str) -> Result<RelayMode, String> {
    match text {
        "splice" if cfg!(target_os = "linux") => Ok(RelayMode::Splice),
        "splice" => Err("--relay: splice is only available on Linux".into()),
        "copy" => Ok(RelayMode::Copy),
        _ => Err(format!("--relay: {text:?} is not splice or copy")),
    }
}

fn relay_name(mode: RelayMode) -> &'static str {
    match mode {
        RelayMode::Splice => "splice",
        RelayMode::Copy => "copy",
    }
}

/// A count from `min` to [`config::MAX_COUNT`].
fn parse_count(flag: &str, text: &str, min: usize) -> Result<usize, String> {
    match text.parse::<u64>() {
        Ok(n) if n >= min as u64 && n <= config::MAX_COUNT as u64 => Ok(n as usize),
        _ => Err(format!("{flag}: {text:?} is not a whole number from {min} to {}", config::MAX_COUNT)),
    }
}

fn flag_duration(flag: &str, text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| format!("{flag}: {e}"))
}

fn parse_nonzero_duration(flag: &str, text: &str) -> Result<Duration, String> {
    match flag_duration(flag, text)? {
        d if d.is_zero() => Err(format!("{flag}: must be more than 0")),
        d => Ok(d),
    }
}

/// `LO-HI`, both ports from 1 to 65535, LO <= HI.
fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = || format!("{text:?} is not a port range LO-HI (like 40000-40099)");
    let (lo, hi) = text.split_once('-').ok_or_else(bad)?;
    let (lo, hi) = (lo.parse::<u16>().map_err(|_| bad())?, hi.parse::<u16>().map_err(|_| bad())?);
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok(lo..=hi)
}

/// Zero means "off".
fn optional(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules;

    fn run(args: &[&str]) -> Result<Settings, String> {
        match parse(args.iter().map(OsString::from))? {
            Action::Run(settings) => Ok(*settings),
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn defaults_listen_on_loopback_1080() {
        let settings = run(&[]).unwrap();
        assert_eq!(settings.config.services.len(), 1);
        assert_eq!(settings.config.services[0].listen_addr(), "127.0.0.1:1080".parse().unwrap());
        assert_eq!(settings.config.handshake_timeout, Duration::from_secs(10));
        assert_eq!(settings.config.idle_timeout, None);
        assert_eq!(settings.config.half_close_timeout, Duration::from_secs(60));
        assert_eq!(settings.config.bind_timeout, Duration::from_secs(60));
        let ServiceSpec::Socks(socks) = &settings.config.services[0] else { panic!("not SOCKS") };
        assert_eq!(socks.socks4, Socks4Policy::Auto);
        assert_eq!(settings.config.udp.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(settings.config.udp.port_range, None);
    }

    #[test]
    fn no_http_turns_http_off_on_mixed_ports_only() {
        let protocols = |args: &[&str]| -> Vec<(bool, bool)> {
            let settings = run(args).unwrap();
            let services = settings.config.services.iter();
            services.map(|s| if let ServiceSpec::Socks(s) = s { (s.socks5, s.http) } else { panic!("{s:?}") }).collect()
        };
        let urls = ["-l", "127.0.0.1:0", "-L", "socks://:0", "-L", "socks5://:0", "-L", "http://:0"];
        assert_eq!(protocols(&urls), [(true, true), (true, true), (true, false), (false, true)]);
        let with_flag = [&urls[..], &["--no-http"]].concat();
        assert_eq!(protocols(&with_flag), [(true, false), (true, false), (true, false), (false, true)]);
    }

    #[test]
    fn a_udp_forward_behind_an_http_hop_is_refused_at_start() {
        let err = run(&["-L", "udp://:0/127.0.0.1:53", "-F", "socks5://127.0.0.1:1", "-F", "http://u:pw@127.0.0.1:2"])
            .unwrap_err();
        assert_eq!(
            err,
            "-L udp://0.0.0.0:0: hop 2 of -F (http://u@127.0.0.1:2) is an HTTP proxy, which carries TCP only"
        );
        assert!(run(&["-L", "tcp://:0/127.0.0.1:53", "-F", "http://127.0.0.1:2"]).is_ok());
    }

    #[test]
    fn reads_every_flag_form() {
        let s = run(&[
            "--listen",
            "[::1]:0",
            "-l",
            "127.0.0.1:0",
            "--user=alice:pw",
            "--max-clients",
            "8",
            "--queue=0",
            "--max-clients-per-ip",
            "3",
            "--idle-timeout",
            "1.5s",
            "--bind-timeout=250ms",
            "--half-close-timeout",
            "2m",
            "--socks4",
            "--keepalive",
            "0",
            "--buffer-size",
            "64K",
            "--relay",
            "copy",
            "--sndbuf",
            "1M",
            "--udp-port-range",
            "40000-40099",
            "--udp-advertise=203.0.113.7",
            "--udp-idle-timeout",
            "0",
            "--udp-rcvbuf",
            "4M",
            "--udp-max-sessions=10",
            "--udp-max-sessions-per-ip",
            "4",
            "--proxy-protocol",
            "10.0.0.0/8",
            "--proxy-protocol=::1",
            "-v",
            "-v",
        ])
        .unwrap();
        assert_eq!(s.config.services.len(), 2);
        for service in &s.config.services {
            let ServiceSpec::Socks(socks) = service else { panic!("{service:?}") };
            assert!(socks.users.verify(b"alice", b"pw"), "--user applies to every --listen");
            assert_eq!(socks.socks4, Socks4Policy::On, "--socks4 applies to every --listen");
        }
        assert_eq!(s.config.bind_timeout, Duration::from_millis(250));
        assert_eq!((s.config.max_clients, s.config.queue), (8, 0));
        assert_eq!(s.config.max_clients_per_ip(), 3);
        assert_eq!((s.config.udp_max_sessions, s.config.udp_max_sessions_per_ip()), (10, 4));
        assert_eq!(s.config.idle_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(s.config.half_close_timeout, Duration::from_secs(120));
        assert_eq!(s.config.socket.keepalive, None);
        assert_eq!(s.config.buffer_size, 64 * 1024);
        assert_eq!(s.config.relay, RelayMode::Copy);
        assert_eq!(s.config.socket.sndbuf, Some(1024 * 1024));
        assert_eq!(s.config.udp.port_range, Some(40000..=40099));
        assert_eq!(s.config.udp.advertise, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(s.config.udp.idle_timeout, None);
        assert_eq!(s.config.udp.rcvbuf, Some(4 << 20));
        assert_eq!(s.verbosity, 2);
        let trusted: Vec<String> = s.config.proxy_protocol.iter().map(ToString::to_string).collect();
        assert_eq!(trusted, ["10.0.0.0/8", "::1/128"]);
        assert!(s.config.sends_proxy_header("10.1.2.3".parse().unwrap()));
        assert!(!s.config.sends_proxy_header("11.1.2.3".parse().unwrap()));
    }

    #[test]
    fn verbosity_saturates_however_often_it_is_given() {
        assert_eq!(run(&["-vv"; 64]).unwrap().verbosity, i8::MAX);
        assert_eq!(run(&["-v"; 128]).unwrap().verbosity, i8::MAX, "never wraps round to errors only");
        assert_eq!(run(&["-qq"; 65]).unwrap().verbosity, i8::MIN);
    }

    #[test]
    fn bad_flags_give_one_line_naming_them() {
        let table = [
            (&["--bogus"][..], "unknown option --bogus"),
            (&["--listen"], "--listen needs a value"),
            (&["--listen", "localhost"], "--listen"),
            (&["--max-clients", "0"], "--max-clients"),
            (&["--connect-timeout", "0"], "--connect-timeout: must be more than 0"),
            (&["--idle-timeout", "5 parsecs"], "--idle-timeout"),
            (&["--buffer-size", "lots"], "--buffer-size"),
            (&["--relay", "teleport"], "--relay: \"teleport\" is not splice or copy"),
            (&["--user", "nocolon"], "--user"),
            (&["stray"], "unexpected argument"),
            (&["--bind-timeout", "0"], "--bind-timeout: must be more than 0"),
            (&["--half-close-timeout", "0"], "--half-close-timeout: must be more than 0"),
            (&["--half-close-timeout", "soon"], "--half-close-timeout"),
            (&["--socks4", "--no-socks4"], "--socks4 and --no-socks4"),
            (&["--udp-port-range", "9-1"], "--udp-port-range"),
            (&["--udp-port-range", "0-10"], "--udp-port-range"),
            (&["--udp-port-range", "100"], "--udp-port-range"),
            (&["--udp-advertise", "nat.example"], "--udp-advertise"),
            (&["--proxy-protocol", "balancer.example"], "--proxy-protocol"),
            (&["--proxy-protocol", "10.0.0.0/33"], "--proxy-protocol"),
        ];
        for (args, want) in table {
            let err = run(args).unwrap_err();
            assert!(err.contains(want) && !err.contains('\n'), "{args:?}: {err}");
        }
    }

    #[test]
    fn urls_add_services_and_hops_in_order() {
        let s = run(&["-L", "tcp://127.0.0.1:0/example.org:80", "-l", "127.0.0.1:0", "-u", "a:b", "-L", "socks5://:0"])
            .unwrap();
        let services = &s.config.services;
        assert_eq!(services.len(), 3, "--listen first, then -L in order: {services:?}");
        assert!(matches!(&services[0], ServiceSpec::Socks(socks) if socks.users.require_login()));
        assert!(matches!(&services[1], ServiceSpec::TcpForward(_)));
        assert!(
            matches!(&services[2], ServiceSpec::Socks(socks) if !socks.users.require_login()),
            "--user is for --listen"
        );

        let s = run(&["-L", "tcp://:0/127.0.0.1:53", "-F", "socks5://127.0.0.1:1", "-F", "socks5://h:2"]).unwrap();
        assert_eq!(s.config.services.len(), 1, "-L alone replaces the default listener");
        let hops: Vec<String> = s.config.chain.iter().map(|hop| hop.to_string()).collect();
        assert_eq!(hops, ["socks5://127.0.0.1:1", "socks5://h:2"]);
    }

    #[test]
    fn bind_out_and_interface_reach_every_service_that_has_none_of_its_own() {
        use crate::config::egress::BindOut;
        let s = run(&[
            "-L",
            "socks://127.0.0.1:0?bind-out=same",
            "--bind-out",
            "127.0.0.2",
            "--bind-out=::1",
            "-l",
            "127.0.0.1:0",
            "--interface",
            "lo",
            "-L",
            "tcp://127.0.0.1:0/h:1?interface=eth1",
        ])
        .unwrap();
        let egress: Vec<String> = s.config.services.iter().map(|spec| spec.egress().to_string()).collect();
        assert_eq!(
            egress,
            [
                "bind-out 127.0.0.2 ::1, interface lo",
                "bind-out same (the address the client reached), interface lo",
                "bind-out 127.0.0.2 ::1, interface eth1",
            ]
        );
        let file = config_file("bind-out", "bind-out 10.0.0.1\nbind-out fd00::1\n");
        let Ok(Action::Run(s)) = with_file(&file, &["--bind-out", "10.0.0.2"]) else { panic!("not run") };
        let v4 = Some("10.0.0.2".parse().unwrap());
        assert_eq!(
            s.config.services[0].egress().bind,
            Some(BindOut::Addrs { v4, v6: None }),
            "the command line's replace the file's"
        );
        let Ok(Action::Run(s)) = with_file(&file, &[]) else { panic!("not run") };
        assert_eq!(s.config.services[0].egress().to_string(), "bind-out 10.0.0.1 fd00::1");
        for (args, want) in [
            (
                &["--bind-out", "10.0.0.1", "--bind-out", "10.0.0.2"][..],
                "--bind-out: at most one IPv4 and one IPv6 address",
            ),
            (&["--bind-out", "same", "--bind-out", "::1"], "--bind-out: \"same\" cannot be combined with an address"),
            (&["--bind-out", "wg0"], "--bind-out: \"wg0\" is not an IP address or \"same\""),
            (&["--interface", "a/b"], "--interface: \"a/b\" is not an interface name (1 to 15 characters, no '/')"),
        ] {
            assert_eq!(run(args).unwrap_err(), want, "{args:?}");
        }
    }

    #[test]
    fn bad_urls_name_the_flag_and_hide_the_password() {
        let err = run(&["-L", "tcp://:8080"]).unwrap_err();
        assert_eq!(err, "-L tcp://:8080: missing target (add /TARGET_HOST:TARGET_PORT)");
        let err = run(&["-F", "socks5://u:secret@h"]).unwrap_err();
        assert_eq!(err, "-F socks5://u:***@h: missing :PORT");
        let err = run(&["-F", "socks5://alice:top/secret@host:1080:x"]).unwrap_err();
        assert!(err.starts_with("-F socks5://alice:***@host:1080:x: ") && !err.contains("secret"), "{err}");
        // One error is one line, whatever the value holds.
        let err = run(&["-L", "socks://x\ny:1080"]).unwrap_err();
        assert!(err.starts_with("-L \"socks://x\\ny:1080\": ") && !err.contains('\n'), "{err}");
        let err = run(&["--x\ny"]).unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert_eq!(run(&["-F"]).unwrap_err(), "-F needs a value");
        // However malformed, no part of the password reaches the line.
        for url in [
            "alice:Sup3rSecret@proxy.example:1080",
            "socks5:/alice:Sup3rSecret@proxy.example:1080",
            "socks5:alice:Sup3rSecret@proxy.example:1080",
            "socks5://alice:Sup3rSecret",
            "socks5://alice:Sup3rSecret proxy.example:1080",
            "socks5://alice:Sup3rSecret@proxy.example",
            "socks5://alice:Sup3rSecret%zz@proxy.example:1080",
            "alice:Sup3rSecret@proxy.example:1080://x",
            "socks4://alice:Sup3rSecret@proxy.example:1080",
        ] {
            for flag in ["-F", "-L"] {
                let err = run(&[flag, url]).unwrap_err();
                assert!(!err.contains("Sup3r") && !err.contains("Secret") && !err.contains('\n'), "{url}: {err}");
            }
        }
    }

    /// `burrowd.conf` in a directory of its own, removed with it when dropped.
    struct ConfigFile(std::path::PathBuf);

    impl std::ops::Deref for ConfigFile {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for ConfigFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn config_file(test: &str, text: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join(format!("burrowd-cli-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("burrowd.conf");
        std::fs::write(&path, text).unwrap();
        ConfigFile(path)
    }

    fn with_file(path: &Path, args: &[&str]) -> Result<Action, String> {
        let path = path.to_str().unwrap();
        parse(["--config", path].iter().chain(args).map(OsString::from))
    }

    fn socks4_policies(config: &Config) -> Vec<Socks4Policy> {
        config
            .services
            .iter()
            .filter_map(|s| if let ServiceSpec::Socks(s) = s { Some(s.socks4) } else { None })
            .collect()
    }

    #[test]
    fn a_config_file_comes_first_and_the_command_line_overrides_or_follows_it() {
        let file = config_file(
            "precedence",
            "# a comment\nlisten 127.0.0.1:0\nmax-clients 8\nqueue 3\n\nallow from 127.0.0.1\nsocks4\nv\n",
        );
        let Ok(Action::Run(s)) =
            with_file(&file, &["--max-clients", "16", "-l", "[::1]:0", "--deny", "from 127.0.0.0/8", "--no-socks4"])
        else {
            panic!("not run");
        };
        assert_eq!((s.config.max_clients, s.config.queue), (16, 3), "the later value wins, the file's stays otherwise");
        let listens: Vec<String> = s.config.services.iter().map(|s| s.listen_addr().to_string()).collect();
        assert_eq!(listens, ["127.0.0.1:0", "[::1]:0"], "the file's listener first");
        assert_eq!(socks4_policies(&s.config), [Socks4Policy::Off; 2], "--no-socks4 overrides the file's socks4");
        assert_eq!(s.verbosity, 1);
        // The file's rule comes first, so it decides for 127.0.0.1, and is named by its line.
        let rules = s.config.rules.current();
        let ask = |ip: &str| rules::Request { client: Some(ip.parse().unwrap()), ..Default::default() };
        let line = format!("{}:6", file.display());
        assert_eq!(rules.decide(&ask("127.0.0.1")), rules::Decision::Decided(Verdict::Allow, rules::Why::Rule(&line)));
        let flag = rules::Why::Rule("--deny 'from 127.0.0.0/8'");
        assert_eq!(rules.decide(&ask("127.0.0.2")), rules::Decision::Decided(Verdict::Deny, flag));
    }

    #[test]
    fn check_reads_everything_and_help_wins_over_any_error() {
        let file = config_file("check", "listen 127.0.0.1:0\n");
        assert!(matches!(with_file(&file, &["--check"]), Ok(Action::Check(_))));
        assert!(matches!(parse(["--check", "--bogus"].map(OsString::from)), Err(e) if e == "unknown option --bogus"));
        assert!(matches!(parse(["--max-clients", "0", "--help"].map(OsString::from)), Ok(Action::Help)));
        assert!(matches!(
            parse(["--config", "/nonexistent/burrowd.conf", "-V"].map(OsString::from)),
            Ok(Action::Version)
        ));
        // A value that looks like a flag is still the value of the flag before it.
        let err = run(&["--user", "--help"]).unwrap_err();
        assert!(err.starts_with("--user: "), "{err}");
    }

    #[test]
    fn a_config_file_error_names_the_file_and_line() {
        let table = [
            ("listen 127.0.0.1:0\n\nbogus 1\n", "3: unknown option --bogus"),
            ("# x\nlisten\n", "2: --listen needs a value"),
            ("max-clients many\n", "1: --max-clients: \"many\" is not a whole number from 1 to 1000000"),
            ("socks4 yes\n", "1: --socks4 takes no value"),
            ("socks4\nno-socks4\n", "2: --socks4 and --no-socks4 cannot both be given"),
            ("deny to 10.0.0.0/33\n", "1: \"10.0.0.0/33\" is not an address or CIDR"),
            ("L tcp://:8080\n", "1: -L tcp://:8080: missing target (add /TARGET_HOST:TARGET_PORT)"),
            ("users missing-users\n", "1: --users: "),
            ("config other.conf\n", "1: --config is for the command line, not a config file"),
            ("check\n", "1: --check is for the command line, not a config file"),
            ("help\n", "1: --help is for the command line, not a config file"),
        ];
        for (i, (text, want)) in table.into_iter().enumerate() {
            let file = config_file(&format!("error-{i}"), text);
            let err = with_file(&file, &[]).unwrap_err();
            let want = format!("{}:{want}", file.display());
            assert!(err.starts_with(&want) && !err.contains('\n'), "{text:?}: {err}");
        }
        let err = with_file(Path::new("/nonexistent/burrowd.conf"), &[]).unwrap_err();
        assert!(err.starts_with("--config: /nonexistent/burrowd.conf: "), "{err}");
    }

    #[test]
    fn relative_paths_in_a_config_file_are_taken_from_its_directory() {
        let file = config_file("relative", "users users\nrules rules.conf\n");
        let dir = file.parent().unwrap();
        std::fs::write(dir.join("users"), "alice:pw\n").unwrap();
        std::fs::write(dir.join("rules.conf"), "deny from 10.0.0.0/8\n").unwrap();
        let Ok(Action::Run(s)) = with_file(&file, &[]) else { panic!("not run") };
        let ServiceSpec::Socks(socks) = &s.config.services[0] else { panic!("not SOCKS") };
        assert!(socks.users.verify(b"alice", b"pw"));
        assert_eq!(s.config.rules.current().len(), 1);
    }

    #[test]
    fn proxy_protocol_sources_come_from_a_config_file_and_the_command_line() {
        let file = config_file("proxy-protocol", "proxy-protocol 10.0.1.5\n");
        let Ok(Action::Run(s)) = with_file(&file, &["--proxy-protocol", "fd00::/64"]) else { panic!("not run") };
        let trusted: Vec<String> = s.config.proxy_protocol.iter().map(ToString::to_string).collect();
        assert_eq!(trusted, ["10.0.1.5/32", "fd00::/64"]);
        let err = with_file(&config_file("proxy-protocol-bad", "proxy-protocol lb.example\n"), &[]).unwrap_err();
        assert!(err.contains(":1: --proxy-protocol: \"lb.example\" is not an address or CIDR"), "{err}");
    }

    #[test]
    fn command_line_only_flags_and_values_where_none_is_taken() {
        assert_eq!(run(&["--socks4=yes"]).unwrap_err(), "--socks4 takes no value");
        assert_eq!(parse(["--check=yes"].map(OsString::from)).unwrap_err(), "--check takes no value");
        assert_eq!(parse(["--config"].map(OsString::from)).unwrap_err(), "--config needs a value");
        let twice = ["--config", "a.conf", "--config=b.conf"].map(OsString::from);
        assert_eq!(parse(twice).unwrap_err(), "--config may be given only once");
        // Both on the command line still contradict, whatever the file says.
        let file = config_file("socks4", "no-socks4\n");
        let err = with_file(&file, &["--socks4", "--no-socks4"]).unwrap_err();
        assert_eq!(err, "--socks4 and --no-socks4 cannot both be given");
        let Ok(Action::Run(s)) = with_file(&file, &["--socks4"]) else { panic!("not run") };
        assert_eq!(socks4_policies(&s.config), [Socks4Policy::On]);
    }

    #[test]
    fn no_socks4_turns_it_off_everywhere() {
        let s = run(&["-l", "127.0.0.1:0", "-l", "[::1]:0", "--no-socks4", "--no-socks4"]).unwrap();
        for service in &s.config.services {
            let ServiceSpec::Socks(socks) = service else { panic!("{service:?}") };
            assert_eq!(socks.socks4, Socks4Policy::Off);
        }
    }
}
