//! What `--check` prints: the settings burrowd would run with once every flag, the config
//! file and the defaults are applied. One block, one setting a line, each named after the
//! flag that sets it, so a reader knows what to change; tests match its lines, so keep the
//! wording stable.

use super::units::human_bytes;
use super::{Config, RelayMode, ServiceSpec, Socks4Policy, SocksSpec};
use crate::wire::printable::Printable;
use std::time::Duration;

/// The settings in force, as lines of text ending in a newline.
pub fn describe(config: &Config) -> String {
    let mut lines = vec![format!("burrowd {}: the configuration is valid", env!("CARGO_PKG_VERSION"))];
    let mut section = |title: &str, items: Vec<(String, String)>| {
        lines.push(format!("{title}:"));
        lines.extend(items.into_iter().map(|(key, value)| format!("  {key:<24} {value}")));
    };
    section("services", config.services.iter().map(service).collect());
    section("upstream", upstream(config));
    section(
        "limits",
        vec![
            item("max-clients", config.max_clients),
            item(
                "max-clients-per-ip",
                defaulted(config.max_clients_per_ip(), config.max_clients_per_ip, "max-clients"),
            ),
            item("queue", config.queue),
            item("udp-max-sessions", format!("{} (each udp:// service)", config.udp_max_sessions)),
            item(
                "udp-max-sessions-per-ip",
                defaulted(config.udp_max_sessions_per_ip(), config.udp_max_sessions_per_ip, "udp-max-sessions"),
            ),
        ],
    );
    section(
        "timeouts",
        vec![
            item("handshake-timeout", duration(config.handshake_timeout)),
            item("connect-timeout", duration(config.connect_timeout)),
            item("bind-timeout", duration(config.bind_timeout)),
            item("idle-timeout", off_or(config.idle_timeout)),
            item("half-close-timeout", duration(config.half_close_timeout)),
            item("drain-timeout", duration(config.drain_timeout)),
            item("udp-idle-timeout", off_or(config.udp.idle_timeout)),
        ],
    );
    section(
        "relay",
        vec![
            item("relay", relay_name(config.relay)),
            item("buffer-size", format!("{} per active direction", human_bytes(config.buffer_size as u64))),
            item("keepalive", off_or(config.socket.keepalive)),
            item("sndbuf", buffer(config.socket.sndbuf)),
            item("rcvbuf", buffer(config.socket.rcvbuf)),
        ],
    );
    let udp = &config.udp;
    section(
        "udp associate",
        vec![
            item("udp-port-range", udp.port_range.as_ref().map_or("any free port".into(), |r| format!("{r:?}"))),
            item("udp-advertise", udp.advertise.map_or("the relay socket's own address".into(), |ip| ip.to_string())),
            item("udp-sndbuf", buffer(udp.sndbuf)),
            item("udp-rcvbuf", buffer(udp.rcvbuf)),
        ],
    );
    let rules = config.rules.current().len();
    let rules = match rules {
        0 => "none: everything allowed, but this host's loopback only to loopback clients".to_owned(),
        n => format!("{n} (the first that matches decides)"),
    };
    let proxy_protocol = match &config.proxy_protocol[..] {
        [] => "off: no PROXY header is read".to_owned(),
        trusted => {
            let trusted: Vec<String> = trusted.iter().map(ToString::to_string).collect();
            format!("a PROXY header (v1 or v2) required from {}", trusted.join(", "))
        }
    };
    section("access", vec![item("rules", rules), item("proxy-protocol", proxy_protocol)]);
    let status = config.status.map_or("off (SIGUSR1 logs the sessions table)".to_owned(), |addr| {
        format!("http://{addr}/sessions and /metrics")
    });
    section("watching", vec![item("status", status)]);
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn item(key: &str, value: impl ToString) -> (String, String) {
    (key.to_owned(), value.to_string())
}

fn service(spec: &ServiceSpec) -> (String, String) {
    let (key, mut value) = service_use(spec);
    if !spec.egress().is_default() {
        value.push_str(&format!("; {}", spec.egress()));
    }
    (key, value)
}

/// What a service serves, and to whom.
fn service_use(spec: &ServiceSpec) -> (String, String) {
    match spec {
        ServiceSpec::Socks(socks) => {
            let on_or_off = |served: bool| if served { login(socks) } else { "off".into() };
            let mut value = format!(
                "SOCKS5 {}; SOCKS4/4a {}; HTTP {}",
                on_or_off(socks.socks5),
                socks4(socks),
                on_or_off(socks.http)
            );
            if spec.is_open_proxy() {
                value.push_str("; an open proxy: not loopback, and no login needed");
            }
            (format!("socks {}", socks.addr), value)
        }
        ServiceSpec::TcpForward(forward) => (format!("tcp {}", forward.addr), format!("forward to {}", forward.target)),
        ServiceSpec::UdpForward(forward) => (
            format!("udp {}", forward.addr),
            format!("forward to {}, a session ends after {} idle (ttl)", forward.target, duration(forward.ttl)),
        ),
    }
}

fn login(socks: &SocksSpec) -> String {
    match socks.users.require_login() {
        false => "no login".into(),
        true => format!("login required ({} user(s))", socks.users.count()),
    }
}

fn socks4(socks: &SocksSpec) -> &'static str {
    match (socks.socks4, !socks.users.require_login()) {
        (Socks4Policy::Off, _) => "off",
        (Socks4Policy::On | Socks4Policy::Auto, true) => "served",
        (Socks4Policy::On, false) => "served without login (--socks4)",
        (Socks4Policy::Auto, false) => "refused (it carries no password)",
    }
}

fn upstream(config: &Config) -> Vec<(String, String)> {
    if config.chain.is_empty() {
        return vec![item("direct", "no -F: targets are reached from this host")];
    }
    config
        .chain
        .iter()
        .enumerate()
        .map(|(i, hop)| {
            let login = match &hop.credentials {
                Some(credentials) => {
                    format!(", login as {} (password hidden)", Printable(&String::from_utf8_lossy(&credentials.user)))
                }
                None => String::new(),
            };
            item(&format!("hop {}", i + 1), format!("{}://{}{login}", hop.kind.scheme(), hop.addr))
        })
        .collect()
}

/// A limit with its flag's value, or the default it takes from another.
fn defaulted(effective: usize, given: Option<usize>, half_of: &str) -> String {
    match given {
        Some(_) => effective.to_string(),
        None => format!("{effective} (half of {half_of})"),
    }
}

fn duration(d: Duration) -> String {
    format!("{d:?}")
}

fn off_or(d: Option<Duration>) -> String {
    d.map_or("off".into(), duration)
}

fn buffer(size: Option<usize>) -> String {
    size.map_or("the OS's".into(), |bytes| human_bytes(bytes as u64))
}

fn relay_name(mode: RelayMode) -> &'static str {
    match mode {
        RelayMode::Splice => "splice",
        RelayMode::Copy => "copy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rules::Cidr;
    use crate::config::service_url;

    #[test]
    fn the_defaults_read_as_the_help_gives_them() {
        let text = describe(&Config::default());
        let expected = [
            "services:",
            "  socks 127.0.0.1:1080     SOCKS5 no login; SOCKS4/4a served; HTTP no login",
            "upstream:",
            "  direct                   no -F: targets are reached from this host",
            "limits:",
            "  max-clients              1024",
            "  max-clients-per-ip       512 (half of max-clients)",
            "  queue                    128",
            "  udp-max-sessions         256 (each udp:// service)",
            "  udp-max-sessions-per-ip  128 (half of udp-max-sessions)",
            "timeouts:",
            "  handshake-timeout        10s",
            "  connect-timeout          10s",
            "  bind-timeout             60s",
            "  idle-timeout             off",
            "  half-close-timeout       60s",
            "  drain-timeout            5s",
            "  udp-idle-timeout         120s",
            "relay:",
            "  relay                    copy",
            "  buffer-size              1.0 MiB per active direction",
            "  keepalive                60s",
            "  sndbuf                   the OS's",
            "  rcvbuf                   the OS's",
            "udp associate:",
            "  udp-port-range           any free port",
            "  udp-advertise            the relay socket's own address",
            "  udp-sndbuf               the OS's",
            "  udp-rcvbuf               the OS's",
            "access:",
            "  rules                    none: everything allowed, but this host's loopback only to loopback clients",
            "  proxy-protocol           off: no PROXY header is read",
            "watching:",
            "  status                   off (SIGUSR1 logs the sessions table)",
        ];
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].starts_with("burrowd ") && lines[0].ends_with(": the configuration is valid"), "{text}");
        assert_eq!(lines[1..], expected);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn each_service_says_who_may_use_it_and_the_chain_hides_passwords() {
        let mut config = Config::default();
        let mut users = SocksSpec::new("0.0.0.0:1080".parse().unwrap());
        users.users.add_entry("alice:one").unwrap();
        users.users.add_entry("bob:two").unwrap();
        let with_socks4 = SocksSpec { socks4: Socks4Policy::On, ..users.clone() };
        config.services = vec![
            ServiceSpec::Socks(users),
            ServiceSpec::Socks(with_socks4),
            service_url::parse_service("socks5://[::1]:1081").unwrap(),
            service_url::parse_service("socks://0.0.0.0:1082").unwrap(),
            service_url::parse_service("http://127.0.0.1:8080").unwrap(),
            service_url::parse_service("tcp://127.0.0.1:2222/10.0.0.5:22").unwrap(),
            service_url::parse_service("udp://127.0.0.1:5353/10.0.0.1:53?ttl=30s").unwrap(),
            service_url::parse_service("socks5://127.0.0.1:1083?bind-out=192.0.2.7&interface=wg0").unwrap(),
            service_url::parse_service("tcp://127.0.0.1:2223/10.0.0.5:22?bind-out=same").unwrap(),
        ];
        config.chain = vec![
            service_url::parse_hop("socks5://carol:s3cret@hop1.example:1080").unwrap(),
            service_url::parse_hop("socks5://10.0.0.2:1080").unwrap(),
            service_url::parse_hop("http://10.0.0.3:3128").unwrap(),
        ];
        config.max_clients_per_ip = Some(7);
        config.proxy_protocol = ["10.0.0.0/8", "::1"].map(|cidr| Cidr::parse(cidr).unwrap()).to_vec();
        config.idle_timeout = Some(Duration::from_millis(1500));
        let text = describe(&config);
        for line in [
            "  socks 0.0.0.0:1080       SOCKS5 login required (2 user(s)); SOCKS4/4a refused (it carries no password); \
             HTTP login required (2 user(s))",
            "  socks 0.0.0.0:1080       SOCKS5 login required (2 user(s)); SOCKS4/4a served without login (--socks4); \
             HTTP login required (2 user(s)); an open proxy: not loopback, and no login needed",
            "  socks [::1]:1081         SOCKS5 no login; SOCKS4/4a off; HTTP off",
            "  socks 0.0.0.0:1082       SOCKS5 no login; SOCKS4/4a served; HTTP no login; \
             an open proxy: not loopback, and no login needed",
            "  socks 127.0.0.1:8080     SOCKS5 off; SOCKS4/4a off; HTTP no login",
            "  tcp 127.0.0.1:2222       forward to 10.0.0.5:22",
            "  udp 127.0.0.1:5353       forward to 10.0.0.1:53, a session ends after 30s idle (ttl)",
            "  socks 127.0.0.1:1083     SOCKS5 no login; SOCKS4/4a off; HTTP off; bind-out 192.0.2.7 (IPv4 only), interface wg0",
            "  tcp 127.0.0.1:2223       forward to 10.0.0.5:22; bind-out same (the address the client reached)",
            "  hop 1                    socks5://hop1.example:1080, login as carol (password hidden)",
            "  hop 2                    socks5://10.0.0.2:1080",
            "  hop 3                    http://10.0.0.3:3128",
            "  max-clients-per-ip       7",
            "  idle-timeout             1.5s",
            "  proxy-protocol           a PROXY header (v1 or v2) required from 10.0.0.0/8, ::1/128",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        assert!(!text.contains("s3cret"), "{text}");
    }
}
