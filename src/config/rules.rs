//! Access rules: who may use the proxy and where they may go (`--allow`, `--deny`,
//! `--rules FILE`).
//!
//! A rule is a verdict and any combination of conditions, all of which must hold: the
//! client's address (`from CIDR`), its login (`user NAME`), the command (`cmd
//! connect|bind|udp`), the destination (`to CIDR|NAME|.SUFFIX|*`) and its port (`port N`
//! or `port N-M`). The first rule that matches decides; when none does, the opposite of
//! the last rule applies, and with no rules everything is allowed. Apart from the rules, a
//! client that is not on loopback may not reach this host's loopback or unspecified
//! addresses unless the deciding rule's `to` names such an address.
//!
//! A question may be asked before every fact is known (at accept, only the client's
//! address; before a name is resolved, no address): a rule that might match depending on
//! a fact not yet known leaves the answer open, and the question is asked again later.

use super::text_file;
use crate::wire::addr;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

/// The command a rule can name; SOCKS4's CONNECT and BIND count as connect and bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Connect,
    Bind,
    Udp,
}

/// An address block: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

/// What `to` names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    Net(Cidr),
    /// A host name in canonical form (`wire::addr::canonical_host`); matches that name
    /// exactly, ignoring case and a trailing dot.
    Name(String),
    /// `.example.com`, canonical and without the leading dot: that domain and every name under it.
    Domain(String),
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    verdict: Verdict,
    from: Option<Cidr>,
    user: Option<String>,
    cmd: Option<Cmd>,
    to: Option<Destination>,
    port: Option<RangeInclusive<u16>>,
    /// Where it was written, for the log line: `--deny 'to 10.0.0.0/8'` or `rules.conf:7`.
    origin: String,
}

/// Where the rules come from, in the order given, so a reload reads the same places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    /// `--allow RULE` or `--deny RULE`.
    Flag(Verdict, String),
    /// `--rules FILE`.
    File(PathBuf),
    /// `allow RULE` or `deny RULE` on a line of a `--config` file, named by that line
    /// (`FILE:LINE`) in errors and log lines, as a rules file's lines are.
    Line(Verdict, String, String),
}

/// The rules in force, shared by everything that checks them; a reload swaps in a new
/// table while sessions that started under the old one keep it.
#[derive(Clone, Default)]
pub struct Rules {
    sources: Vec<RuleSource>,
    table: Arc<RwLock<Arc<RuleTable>>>,
}

/// One reading of the rules, with this host's addresses that the protection shields.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RuleTable {
    rules: Vec<Rule>,
    /// This host's interface addresses, as last read (sorted).
    host: Vec<IpAddr>,
}

/// What is known of a request when a question is asked; `None` is not known yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    pub client: Option<IpAddr>,
    /// The login as the client sent it, raw bytes; `Some(None)`: known not to have logged in.
    pub user: Option<Option<&'a [u8]>>,
    pub cmd: Option<Cmd>,
    /// The name the client asked for, if it asked for a name.
    pub name: Option<&'a str>,
    /// The address to be connected to: the one asked for, or one a name resolved to.
    /// `None` while a name is not resolved yet.
    pub address: Option<IpAddr>,
    /// Whether the destination is known at all (false at accept and for UDP ASSOCIATE).
    pub destination_known: bool,
    pub port: Option<u16>,
    /// Whether the destination is reached from this host (no `-F` chain): only then does
    /// the built-in loopback protection apply.
    pub direct: bool,
    /// A `tcp://` or `udp://` client: its target is the operator's choice, so `to` and
    /// `port` never match it.
    pub forward: bool,
}

/// The answer to a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'t> {
    /// Decided, by `why`: a rule's origin, the default, or the built-in protection.
    Decided(Verdict, Why<'t>),
    /// A rule that might match depends on a fact not known yet; the first such rule.
    Open(&'t str),
}

/// Proof that the rules allow a request to go to `T` (a target, an address, a peer):
/// only [`RuleTable::permit`] makes one. What connects, listens or sends on a client's
/// behalf takes one, so a path that forgets to ask does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed<T>(T);

impl<T> Allowed<T> {
    pub fn get(&self) -> &T {
        &self.0
    }

    /// Destinations allowed one by one are allowed together.
    pub fn all(each: impl IntoIterator<Item = Allowed<T>>) -> Allowed<Vec<T>> {
        Allowed(each.into_iter().map(|allowed| allowed.0).collect())
    }
}

/// Why [`RuleTable::permit`] gave no proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused<'t> {
    Denied(Why<'t>),
    /// A rule that might match (named) depends on a fact this question cannot know.
    Undecided(&'t str),
}

/// What decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why<'t> {
    Rule(&'t str),
    /// No rule matched: the opposite of the last one (or allow, with none).
    Default,
    /// A non-loopback client asked for this host's loopback or unspecified address.
    Protection,
}

impl fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Rule(origin) => write!(f, "{origin}"),
            Why::Default => write!(f, "the default (no rule matched)"),
            Why::Protection => {
                write!(f, "the built-in protection of this host's loopback (a rule's `to` may open it)")
            }
        }
    }
}

impl Rules {
    /// Reads every source; an error names the flag or the file and line.
    pub fn load(sources: Vec<RuleSource>) -> Result<Rules, String> {
        let table = RuleTable::read(&sources)?;
        Ok(Rules { sources, table: Arc::new(RwLock::new(Arc::new(table))) })
    }

    /// The table in force now; a session keeps the one it started with.
    pub fn current(&self) -> Arc<RuleTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Reads the sources again and swaps the new table in whole; on any error (a file
    /// unreadable, empty, changing while read, or with a bad line) the table in force stays.
    pub fn reload(&self) -> Result<usize, String> {
        let table = RuleTable { host: self.current().host.clone(), ..RuleTable::read(&self.sources)? };
        let count = table.rules.len();
        *self.table.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(table);
        Ok(count)
    }

    pub fn is_empty(&self) -> bool {
        self.current().rules.is_empty()
    }

    /// Shields `host`, this host's interface addresses as just read, from now on.
    pub fn shield_host(&self, mut host: Vec<IpAddr>) {
        host.sort();
        host.dedup();
        let mut table = self.table.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *table = Arc::new(RuleTable { rules: table.rules.clone(), host });
    }

    /// Whether any source is a file (something a reload would read again).
    pub fn has_files(&self) -> bool {
        self.sources.iter().any(|source| matches!(source, RuleSource::File(_)))
    }
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rules({} in force)", self.current().rules.len())
    }
}

impl RuleTable {
    fn read(sources: &[RuleSource]) -> Result<RuleTable, String> {
        let mut rules = Vec::new();
        for source in sources {
            match source {
                RuleSource::Flag(verdict, text) => {
                    let origin = format!("{} {}", flag_name(*verdict), quoted(text));
                    rules.push(Rule::parse(*verdict, text, origin.clone()).map_err(|e| format!("{origin}: {e}"))?);
                }
                RuleSource::File(path) => read_file(path, &mut rules)?,
                RuleSource::Line(verdict, text, at) => {
                    rules.push(Rule::parse(*verdict, text, at.clone()).map_err(|e| format!("{at}: {e}"))?);
                }
            }
        }
        Ok(RuleTable { rules, host: Vec::new() })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Asks whether `request` may go to `destination` (what the request's facts describe),
    /// as a final answer: only a rule or the default allowing it gives the proof; a
    /// question left open is refused, never taken for an allow.
    pub fn permit<T>(&self, request: &Request<'_>, destination: T) -> Result<Allowed<T>, Refused<'_>> {
        // What most servers run with: no rules and a client on this host. No rule can leave
        // the answer open and the protection spares local clients, so the answer is allow.
        if self.rules.is_empty() && request.client.is_some_and(|client| client.to_canonical().is_loopback()) {
            return Ok(Allowed(destination));
        }
        match self.decide(request) {
            Decision::Decided(Verdict::Allow, _) => Ok(Allowed(destination)),
            Decision::Decided(Verdict::Deny, why) => Err(Refused::Denied(why)),
            Decision::Open(rule) => Err(Refused::Undecided(rule)),
        }
    }

    /// Asks whether `request` may go ahead, as far as its known facts tell.
    pub fn decide(&self, request: &Request<'_>) -> Decision<'_> {
        let mut deciding = None;
        for rule in &self.rules {
            match rule.matches(request) {
                Some(true) => {
                    deciding = Some(rule);
                    break;
                }
                Some(false) => {}
                None => return Decision::Open(&rule.origin),
            }
        }
        let (verdict, why) = match deciding {
            Some(rule) => (rule.verdict, Why::Rule(&rule.origin)),
            None => match self.rules.last() {
                Some(last) if last.verdict == Verdict::Allow => (Verdict::Deny, Why::Default),
                _ => (Verdict::Allow, Why::Default),
            },
        };
        if verdict == Verdict::Allow && self.breaks_protection(request, deciding) {
            return Decision::Decided(Verdict::Deny, Why::Protection);
        }
        Decision::Decided(verdict, why)
    }
}

impl RuleTable {
    /// The built-in protection: whether allowing `request` would let a non-loopback client
    /// reach an address of this host (loopback, unspecified or an interface's), which only
    /// a deciding rule whose `to` names such addresses may do.
    fn breaks_protection(&self, request: &Request<'_>, deciding: Option<&Rule>) -> bool {
        let (Some(client), Some(address)) = (request.client, request.address) else { return false };
        if !request.direct || request.forward || client.to_canonical().is_loopback() || !self.is_protected(address) {
            return false;
        }
        !deciding.is_some_and(|rule| matches!(&rule.to, Some(Destination::Net(net)) if self.names_protected(net)))
    }

    /// Addresses a remote client may not reach through this host unless a rule says so.
    fn is_protected(&self, address: IpAddr) -> bool {
        SHIELDED.iter().any(|shielded| shielded.contains(address))
            || self.host.binary_search(&address.to_canonical()).is_ok()
    }

    /// Whether the block lies within the protected addresses, so that a rule allowing it
    /// names them on purpose (`to 0.0.0.0/0` does not).
    fn names_protected(&self, net: &Cidr) -> bool {
        let full = if net.net.is_ipv4() { 32 } else { 128 };
        SHIELDED.iter().any(|shielded| {
            shielded.net.is_ipv4() == net.net.is_ipv4() && shielded.prefix <= net.prefix && shielded.contains(net.net)
        }) || (net.prefix == full && self.host.binary_search(&net.net).is_ok())
    }
}

/// Loopback and unspecified in every spelling that reaches them: 127/8, 0.0.0.0, ::1, ::,
/// and 127/8 or 0/8 inside IPv4-compatible (`::a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) addresses. (IPv4-mapped ones,
/// `::ffff:a.b.c.d`, count as IPv4 already.)
const SHIELDED: [Cidr; 10] = [
    Cidr { net: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), prefix: 8 },
    Cidr { net: IpAddr::V4(Ipv4Addr::UNSPECIFIED), prefix: 32 },
    Cidr { net: IpAddr::V6(Ipv6Addr::LOCALHOST), prefix: 128 },
    Cidr { net: IpAddr::V6(Ipv6Addr::UNSPECIFIED), prefix: 128 },
    Cidr { net: IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0x7f00, 0)), prefix: 104 },
    Cidr { net: IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0)), prefix: 104 },
    Cidr { net: IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0x7f00, 0)), prefix: 104 },
    Cidr { net: IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0)), prefix: 104 },
    Cidr { net: IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0x7f00, 0)), prefix: 104 },
    Cidr { net: IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)), prefix: 104 },
];

fn flag_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Allow => "--allow",
        Verdict::Deny => "--deny",
    }
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.escape_debug())
}

/// Reads `allow RULE` / `deny RULE` lines; `#` comments and blank lines are skipped. A
/// file with no rule at all is refused, as one caught empty while it is rewritten would be
/// (see [`text_file::read_whole`] for the rest of what is refused).
fn read_file(path: &Path, rules: &mut Vec<Rule>) -> Result<(), String> {
    let text = text_file::read_whole(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let before = rules.len();
    for (index, line) in text.lines().enumerate() {
        let origin = format!("{}:{}", path.display(), index + 1);
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let verdict = match verb {
            "allow" => Verdict::Allow,
            "deny" => Verdict::Deny,
            other => return Err(format!("{origin}: {:?} is not allow or deny", other.escape_debug().to_string())),
        };
        rules.push(Rule::parse(verdict, rest, origin.clone()).map_err(|e| format!("{origin}: {e}"))?);
    }
    if rules.len() == before {
        return Err(format!("{}: no rules (a rules file needs at least one allow or deny line)", path.display()));
    }
    Ok(())
}

impl Rule {
    fn parse(verdict: Verdict, text: &str, origin: String) -> Result<Rule, String> {
        let mut rule = Rule { verdict, from: None, user: None, cmd: None, to: None, port: None, origin };
        let mut words = text.split_whitespace();
        while let Some(word) = words.next() {
            if !["from", "user", "cmd", "to", "port"].contains(&word) {
                return Err(format!("{word:?} is not from, user, cmd, to or port"));
            }
            let value = words.next().ok_or_else(|| format!("{word:?} needs a value"))?;
            let repeated = match word {
                "from" => rule.from.replace(Cidr::parse(value)?).is_some(),
                "user" => rule.user.replace(value.to_owned()).is_some(),
                "cmd" => rule.cmd.replace(parse_cmd(value)?).is_some(),
                "to" => rule.to.replace(Destination::parse(value)?).is_some(),
                "port" => rule.port.replace(parse_ports(value)?).is_some(),
                _ => unreachable!("checked above"),
            };
            if repeated {
                return Err(format!("{word:?} is given twice"));
            }
        }
        Ok(rule)
    }

    /// Whether this rule matches: `None` if that depends on a fact not known yet.
    fn matches(&self, request: &Request<'_>) -> Option<bool> {
        let conditions = [
            self.from.map(|net| request.client.map(|client| net.contains(client))),
            self.user.as_ref().map(|user| request.user.map(|login| login == Some(user.as_bytes()))),
            self.cmd.map(|cmd| request.cmd.map(|asked| asked == cmd)),
            self.to.as_ref().map(|to| if request.forward { Some(false) } else { to.matches(request) }),
            self.port.as_ref().map(|ports| {
                if request.forward { Some(false) } else { request.port.map(|port| ports.contains(&port)) }
            }),
        ];
        // A condition known to fail decides, even if another is not known yet.
        let mut open = false;
        for condition in conditions.into_iter().flatten() {
            match condition {
                Some(false) => return Some(false),
                Some(true) => {}
                None => open = true,
            }
        }
        (!open).then_some(true)
    }
}

impl Destination {
    fn parse(text: &str) -> Result<Destination, String> {
        if text == "*" {
            return Ok(Destination::Any);
        }
        if let Ok(net) = Cidr::parse(text) {
            return Ok(Destination::Net(net));
        }
        if text.contains('/') || text.parse::<IpAddr>().is_ok() {
            return Err(format!("{text:?} is not an address or CIDR"));
        }
        // Kept in the canonical form a request's name is compared in.
        let (domain, name) = match text.strip_prefix('.') {
            Some(domain) => (true, domain),
            None => (false, text),
        };
        match addr::host_name(name) {
            Ok(name) if domain => Ok(Destination::Domain(addr::canonical_host(name).into_owned())),
            Ok(name) => Ok(Destination::Name(addr::canonical_host(name).into_owned())),
            Err(_) => Err(format!("{text:?} is not a CIDR, a host name, .DOMAIN or *")),
        }
    }

    fn matches(&self, request: &Request<'_>) -> Option<bool> {
        if !request.destination_known {
            return None;
        }
        match self {
            Destination::Any => Some(true),
            // An address rule is judged on the address connected to, once a name has one.
            Destination::Net(net) => request.address.map(|address| net.contains(address)),
            Destination::Name(name) => Some(request.name.is_some_and(|asked| addr::canonical_host(asked) == *name)),
            Destination::Domain(domain) => {
                Some(request.name.is_some_and(|asked| in_domain(&addr::canonical_host(asked), domain)))
            }
        }
    }
}

/// Whether `name` is `domain` or a name under it, both in canonical form.
fn in_domain(name: &str, domain: &str) -> bool {
    name.strip_suffix(domain).is_some_and(|head| head.is_empty() || head.ends_with('.'))
}

fn parse_cmd(text: &str) -> Result<Cmd, String> {
    match text {
        "connect" => Ok(Cmd::Connect),
        "bind" => Ok(Cmd::Bind),
        "udp" => Ok(Cmd::Udp),
        _ => Err(format!("cmd {text:?} is not connect, bind or udp")),
    }
}

fn parse_ports(text: &str) -> Result<RangeInclusive<u16>, String> {
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("port {text:?} is not N or N-M (0 to 65535)"));
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (port(low)?, port(high)?),
        None => (port(text)?, port(text)?),
    };
    if low > high {
        return Err(format!("port range {text:?} is empty"));
    }
    Ok(low..=high)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || format!("{text:?} is not an address or CIDR");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let net: IpAddr = address.parse().map_err(|_| bad())?;
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|&p| p <= bits).ok_or_else(bad)?,
            None => bits,
        };
        Ok(Cidr { net, prefix })
    }

    /// Whether `address` is in the block; an IPv4-mapped IPv6 address counts as IPv4.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.net, address.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(address)) => {
                prefix_eq(u128::from(net.to_bits()) << 96, u128::from(address.to_bits()) << 96, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(address)) => prefix_eq(net.to_bits(), address.to_bits(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
    (a ^ b) & mask == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &[(Verdict, &str)]) -> RuleTable {
        RuleTable::read(&rules.iter().map(|(v, text)| RuleSource::Flag(*v, (*text).to_owned())).collect::<Vec<_>>())
            .unwrap()
    }

    fn connect<'a>(client: &str, name: Option<&'a str>, address: Option<&str>, port: u16) -> Request<'a> {
        Request {
            client: Some(client.parse().unwrap()),
            user: Some(None),
            cmd: Some(Cmd::Connect),
            name,
            address: address.map(|a| a.parse().unwrap()),
            destination_known: true,
            port: Some(port),
            direct: true,
            forward: false,
        }
    }

    fn verdict(decision: Decision<'_>) -> Verdict {
        match decision {
            Decision::Decided(verdict, _) => verdict,
            Decision::Open(rule) => panic!("open at {rule}"),
        }
    }

    use Verdict::{Allow, Deny};

    #[test]
    fn first_match_decides_and_the_default_is_the_opposite_of_the_last_rule() {
        let rules = table(&[(Deny, "to 169.254.0.0/16"), (Allow, "from 192.168.1.0/24 port 80-443")]);
        assert_eq!(verdict(rules.decide(&connect("192.168.1.7", None, Some("169.254.1.1"), 80))), Deny);
        assert_eq!(verdict(rules.decide(&connect("192.168.1.7", None, Some("10.1.1.1"), 443))), Allow);
        assert_eq!(verdict(rules.decide(&connect("192.168.1.7", None, Some("10.1.1.1"), 22))), Deny, "default");
        assert_eq!(verdict(rules.decide(&connect("10.9.9.9", None, Some("10.1.1.1"), 80))), Deny, "default");
        let deny_only = table(&[(Deny, "to .ads.example")]);
        assert_eq!(verdict(deny_only.decide(&connect("10.9.9.9", Some("x.ADS.example"), None, 80))), Deny);
        assert_eq!(verdict(deny_only.decide(&connect("10.9.9.9", Some("ads.example."), None, 80))), Deny);
        assert_eq!(verdict(deny_only.decide(&connect("10.9.9.9", Some("notads.example"), None, 80))), Allow);
        assert_eq!(verdict(RuleTable::default().decide(&connect("10.9.9.9", None, Some("10.1.1.1"), 1))), Allow);
    }

    #[test]
    fn names_match_in_one_canonical_form_on_both_sides() {
        let rules = table(&[
            (Deny, "to blocked.example"),
            (Deny, "to LocalHost."),
            (Deny, "to .Ads.Example."),
            (Allow, "to *"),
        ]);
        for name in ["blocked.example.", "BLOCKED.example", "localhost.", "LOCALHOST", "x.ads.example.", "ADS.EXAMPLE."]
        {
            assert_eq!(verdict(rules.decide(&connect("10.9.9.9", Some(name), None, 80))), Deny, "{name}");
        }
        for name in ["notblocked.example", "blocked.example.com", "localhost.example", "notads.example."] {
            assert_eq!(verdict(rules.decide(&connect("10.9.9.9", Some(name), None, 80))), Allow, "{name}");
        }
        let bad = |text: &str| RuleTable::read(&[RuleSource::Flag(Deny, text.to_owned())]).unwrap_err();
        for name in ["a..b", "\\098locked.example", "x.example..", ".", "..example"] {
            assert!(bad(&format!("to {name}")).contains("is not a CIDR, a host name"), "{name}");
        }
    }

    #[test]
    fn a_rule_on_a_fact_not_known_yet_leaves_the_answer_open() {
        let rules = table(&[(Allow, "user alice"), (Deny, "from 10.0.0.0/8")]);
        let at_accept = Request { client: Some("10.1.1.1".parse().unwrap()), ..Request::default() };
        assert_eq!(rules.decide(&at_accept), Decision::Open("--allow 'user alice'"), "alice might log in");
        let only_from = table(&[(Deny, "from 10.0.0.0/8"), (Allow, "user alice")]);
        assert_eq!(verdict(only_from.decide(&at_accept)), Deny, "decided by the address alone");
        // a name not yet resolved: an address rule waits, a name rule decides
        let by_address = table(&[(Deny, "to 127.0.0.0/8")]);
        let unresolved = connect("10.9.9.9", Some("evil.example"), None, 80);
        assert_eq!(by_address.decide(&unresolved), Decision::Open("--deny 'to 127.0.0.0/8'"));
        let resolved = Request { address: Some("127.0.0.1".parse().unwrap()), ..unresolved };
        assert_eq!(verdict(by_address.decide(&resolved)), Deny, "a name that resolves to a denied address");
    }

    #[test]
    fn user_never_matches_a_client_that_did_not_log_in() {
        let rules = table(&[(Allow, "user alice"), (Deny, "to *")]);
        let mut request = connect("10.9.9.9", None, Some("10.1.1.1"), 80);
        assert_eq!(verdict(rules.decide(&request)), Deny);
        request.user = Some(Some(b"alice"));
        assert_eq!(verdict(rules.decide(&request)), Allow);
    }

    #[test]
    fn loopback_is_protected_from_remote_clients_unless_a_rule_names_it() {
        let none = RuleTable::default();
        assert_eq!(
            none.decide(&connect("10.9.9.9", None, Some("127.0.0.1"), 22)),
            Decision::Decided(Deny, Why::Protection)
        );
        assert_eq!(verdict(none.decide(&connect("10.9.9.9", None, Some("::ffff:127.0.0.1"), 22))), Deny);
        assert_eq!(verdict(none.decide(&connect("10.9.9.9", None, Some("0.0.0.0"), 22))), Deny);
        assert_eq!(verdict(none.decide(&connect("10.9.9.9", None, Some("::1"), 22))), Deny);
        assert_eq!(verdict(none.decide(&connect("127.0.0.1", None, Some("127.0.0.1"), 22))), Allow, "local client");
        let everything = table(&[(Allow, "to 0.0.0.0/0")]);
        assert_eq!(verdict(everything.decide(&connect("10.9.9.9", None, Some("127.0.0.1"), 22))), Deny);
        let opened = table(&[(Allow, "to 127.0.0.1 port 8080"), (Deny, "to 10.0.0.0/8")]);
        assert_eq!(verdict(opened.decide(&connect("10.9.9.9", None, Some("127.0.0.1"), 8080))), Allow);
        assert_eq!(verdict(opened.decide(&connect("10.9.9.9", None, Some("127.0.0.1"), 22))), Deny);
        let chained = Request { direct: false, ..connect("10.9.9.9", None, Some("127.0.0.1"), 22) };
        assert_eq!(verdict(none.decide(&chained)), Allow, "the chain's last hop reaches it, not this host");
    }

    #[test]
    fn only_a_final_allow_gives_a_proof() {
        let rules = table(&[(Allow, "to 192.0.2.0/24")]);
        let upstream = |name, address| Request { direct: false, ..connect("127.0.0.1", name, address, 80) };
        let undecided = Refused::Undecided("--allow 'to 192.0.2.0/24'");
        assert_eq!(rules.permit(&upstream(Some("localhost"), None), ()), Err(undecided), "never an allow");
        assert!(rules.permit(&upstream(None, Some("192.0.2.7")), ()).is_ok());
        assert_eq!(rules.permit(&upstream(None, Some("127.0.0.1")), ()), Err(Refused::Denied(Why::Default)));
        // The shortcut for no rules and a local client answers as deciding would.
        let none = RuleTable::default();
        for client in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.2", "10.9.9.9"] {
            for address in ["127.0.0.1", "10.1.1.1", "0.0.0.0", "::"] {
                let request = connect(client, None, Some(address), 80);
                let allowed = verdict(none.decide(&request)) == Allow;
                assert_eq!(none.permit(&request, ()).is_ok(), allowed, "{client} to {address}");
            }
        }
    }

    #[test]
    fn a_forward_client_is_judged_on_who_it_is_not_where_it_goes() {
        let rules =
            table(&[(Deny, "to 10.0.0.0/8"), (Deny, "port 22"), (Deny, "user alice"), (Allow, "from 192.168.1.0/24")]);
        let forward = |client| Request { forward: true, ..connect(client, None, Some("10.1.1.1"), 22) };
        assert!(rules.permit(&forward("192.168.1.7"), ()).is_ok(), "the operator chose the target");
        assert_eq!(rules.permit(&forward("10.9.9.9"), ()), Err(Refused::Denied(Why::Default)));
        let to_loopback = Request { forward: true, ..connect("10.9.9.9", None, Some("127.0.0.1"), 8080) };
        assert!(RuleTable::default().permit(&to_loopback, ()).is_ok(), "a forward to loopback is the operator's");
    }

    #[test]
    fn every_spelling_of_loopback_and_unspecified_is_protected() {
        let none = RuleTable::default();
        let remote = |address| verdict(none.decide(&connect("10.9.9.9", None, Some(address), 22)));
        for address in [
            "::127.0.0.1",
            "::127.1.2.3",
            "::0.0.0.0",
            "::0.1.2.3",
            "::ffff:0:127.0.0.1",
            "::ffff:0:0.0.0.5",
            "64:ff9b::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::0.0.0.0",
        ] {
            assert_eq!(remote(address), Deny, "{address}");
        }
        for address in ["::10.1.2.3", "::ffff:0:10.1.2.3", "64:ff9b::10.1.2.3", "64:ff9b:1::127.0.0.1", "2001:db8::1"] {
            assert_eq!(remote(address), Allow, "{address} is not this host");
        }
        let opened =
            table(&[(Allow, "to 64:ff9b::127.0.0.1 port 8080"), (Allow, "to ::127.0.0.0/104"), (Allow, "to *")]);
        assert_eq!(verdict(opened.decide(&connect("10.9.9.9", None, Some("64:ff9b::7f00:1"), 8080))), Allow);
        assert_eq!(verdict(opened.decide(&connect("10.9.9.9", None, Some("64:ff9b::7f00:1"), 22))), Deny);
        assert_eq!(verdict(opened.decide(&connect("10.9.9.9", None, Some("::127.0.0.9"), 22))), Allow);
        let too_wide = table(&[(Allow, "to ::/96"), (Allow, "to ::ffff:0:0/96")]);
        assert_eq!(verdict(too_wide.decide(&connect("10.9.9.9", None, Some("::127.0.0.1"), 22))), Deny);
        assert_eq!(verdict(too_wide.decide(&connect("10.9.9.9", None, Some("127.0.0.1"), 22))), Deny);
    }

    #[test]
    fn this_hosts_interface_addresses_are_protected_too() {
        let rules = Rules::load(vec![RuleSource::Flag(Allow, "to 192.0.2.7 port 8080".into())]).unwrap();
        rules.shield_host(vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()]);
        let table = rules.current();
        let remote = |address, port| verdict(table.decide(&connect("10.9.9.9", None, Some(address), port)));
        assert_eq!(remote("192.0.2.7", 22), Deny);
        assert_eq!(remote("::ffff:192.0.2.7", 22), Deny);
        assert_eq!(remote("2001:db8::7", 22), Deny);
        assert_eq!(remote("192.0.2.7", 8080), Allow, "a rule that names it opens it");
        assert_eq!(verdict(table.decide(&connect("127.0.0.1", None, Some("192.0.2.7"), 22))), Deny, "the default");
        let local = RuleTable { host: table.host.clone(), ..RuleTable::default() };
        assert_eq!(verdict(local.decide(&connect("127.0.0.1", None, Some("192.0.2.7"), 22))), Allow, "local client");
        assert_eq!(verdict(local.decide(&connect("10.9.9.9", None, Some("192.0.2.8"), 22))), Allow, "another host");
        rules.shield_host(Vec::new());
        assert_eq!(verdict(rules.current().decide(&connect("10.9.9.9", None, Some("192.0.2.7"), 8080))), Allow);
        let file_rules = Rules::load(Vec::new()).unwrap();
        file_rules.shield_host(vec!["192.0.2.7".parse().unwrap()]);
        file_rules.reload().unwrap();
        assert_eq!(file_rules.current().host, ["192.0.2.7".parse::<IpAddr>().unwrap()], "a reload keeps them");
    }

    #[test]
    fn cidrs_match_by_prefix_in_both_families() {
        let cidr = |text: &str| Cidr::parse(text).unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(cidr("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("192.168.1.7").contains(ip("192.168.1.7")));
        assert!(cidr("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(cidr("fe80::/10").contains(ip("fe80::1")));
        assert!(!cidr("fe80::/10").contains(ip("fec0::1")));
        assert!(cidr("::1/128").contains(ip("::1")));
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(!cidr("::/0").contains(ip("10.1.2.3")));
    }

    #[test]
    fn a_bad_rule_is_one_line_naming_it() {
        let bad = |verdict, text: &str| RuleTable::read(&[RuleSource::Flag(verdict, text.to_owned())]).unwrap_err();
        assert_eq!(bad(Deny, "to 10.0.0.0/33"), "--deny 'to 10.0.0.0/33': \"10.0.0.0/33\" is not an address or CIDR");
        assert!(bad(Allow, "port 90-80").contains("empty"));
        assert!(bad(Allow, "cmd ping").contains("not connect, bind or udp"));
        assert!(bad(Allow, "from").contains("needs a value"));
        assert!(bad(Allow, "to a to b").contains("twice"));
        assert!(bad(Allow, "sometimes").contains("is not from, user, cmd, to or port"));
    }

    #[test]
    fn a_rules_file_is_read_in_place_and_names_its_lines() {
        let dir = std::env::temp_dir().join(format!("burrowd-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rules.conf");
        std::fs::write(&file, "# office\nallow from 192.168.1.0/24  # the LAN\n\ndeny to .ads.example\n").unwrap();
        let sources = vec![
            RuleSource::Flag(Deny, "to 169.254.0.0/16".into()),
            RuleSource::File(file.clone()),
            RuleSource::Flag(Allow, "user alice".into()),
        ];
        let rules = Rules::load(sources).unwrap();
        let current = rules.current();
        let origins: Vec<_> = current.rules.iter().map(|rule| rule.origin.as_str()).collect();
        let file_origin = |line| format!("{}:{line}", file.display());
        assert_eq!(origins, ["--deny 'to 169.254.0.0/16'", &file_origin(2), &file_origin(4), "--allow 'user alice'"]);

        std::fs::write(&file, "allow from 10.0.0.0/8\nmaybe to *\n").unwrap();
        let err = rules.reload().unwrap_err();
        assert_eq!(err, format!("{}: \"maybe\" is not allow or deny", file_origin(2)));
        assert_eq!(rules.current().len(), 4, "a failed reload keeps the table in force");
        std::fs::write(&file, "allow from 10.0.0.0/8\n").unwrap();
        assert_eq!(rules.reload(), Ok(3));
        for emptied in ["", "# all commented out\n\n"] {
            std::fs::write(&file, emptied).unwrap();
            let err = rules.reload().unwrap_err();
            assert_eq!(
                err,
                format!("{}: no rules (a rules file needs at least one allow or deny line)", file.display())
            );
            assert_eq!(rules.current().len(), 3, "an emptied file keeps the table in force");
        }
        std::fs::write(&file, "\u{feff}deny to .ads.example\r\n").unwrap();
        assert_eq!(rules.reload(), Ok(3), "a byte-order mark and CRLF are taken");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_config_file_line_names_its_rule_and_its_error() {
        let at = "/etc/burrowd/burrowd.conf:7".to_owned();
        let rules = Rules::load(vec![RuleSource::Line(Deny, "to 10.0.0.0/8".into(), at.clone())]).unwrap();
        assert_eq!(rules.current().rules[0].origin, at);
        let err = Rules::load(vec![RuleSource::Line(Allow, "to 10.0.0.0/33".into(), at)]).unwrap_err();
        assert_eq!(err, "/etc/burrowd/burrowd.conf:7: \"10.0.0.0/33\" is not an address or CIDR");
    }
}
