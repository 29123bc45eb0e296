//! A session's standing with the access rules (`config::rules`): the table in force when
//! it started, and what is known of it so far, asked at each step that learns more.

use crate::config::rules::{Cmd, Decision, Request, RuleTable, Verdict};
use crate::wire::addr::TargetAddr;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// What the rules know of one session.
#[derive(Clone)]
pub(crate) struct Access {
    table: Arc<RuleTable>,
    client: IpAddr,
    /// The login as the client sent it, once the users table has accepted it: the raw
    /// bytes, which a rule's `user NAME` is compared with (escaping is for printing only).
    user: Option<Vec<u8>>,
    /// No `-F` chain: destinations are reached from this host.
    direct: bool,
}

/// A request the rules refuse, and which rule (or default) refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied(String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "denied by {}", self.0)
    }
}

impl Access {
    pub(crate) fn new(table: Arc<RuleTable>, client: IpAddr, direct: bool) -> Self {
        Access { table, client, user: None, direct }
    }

    pub(crate) fn logged_in(&mut self, user: &[u8]) {
        self.user = Some(user.to_vec());
    }

    /// Asks about `cmd` to `target` before any name is resolved: a request for an address,
    /// or one that a name or port rule decides, is answered now; the rest waits for
    /// [`Access::check_address`].
    pub(crate) fn check_target(&self, cmd: Cmd, target: &TargetAddr) -> Result<(), Denied> {
        match target {
            TargetAddr::Ip(addr) => self.check_destination(cmd, None, Some(addr.ip()), addr.port()),
            TargetAddr::Domain(name, port) => self.check_destination(cmd, Some(name), None, *port),
        }
    }

    /// Asks about `cmd` to `target` reached at `address` (the target itself, a resolved
    /// address of its name, or the peer that reached a BIND).
    pub(crate) fn check_address(&self, cmd: Cmd, target: &TargetAddr, address: IpAddr) -> Result<(), Denied> {
        let name = match target {
            TargetAddr::Ip(_) => None,
            TargetAddr::Domain(name, _) => Some(name.as_str()),
        };
        self.check_destination(cmd, name, Some(address), target.port())
    }

    /// Asks about `cmd` to the destination known so far: the name asked for, if any, and
    /// the address to be reached, once known.
    pub(crate) fn check_destination(
        &self,
        cmd: Cmd,
        name: Option<&str>,
        address: Option<IpAddr>,
        port: u16,
    ) -> Result<(), Denied> {
        // What most servers run with: nothing to ask.
        if self.table.is_empty() && self.client.to_canonical().is_loopback() {
            return Ok(());
        }
        self.judge(Request { name, address, destination_known: true, port: Some(port), ..self.facts(cmd) })
    }

    /// Asks about a command whose destinations are not known yet (UDP ASSOCIATE): refused
    /// only if the rules refuse it wherever it goes.
    pub(crate) fn check_command(&self, cmd: Cmd) -> Result<(), Denied> {
        self.judge(self.facts(cmd))
    }

    fn facts(&self, cmd: Cmd) -> Request<'_> {
        Request {
            client: Some(self.client),
            user: Some(self.user.as_deref()),
            cmd: Some(cmd),
            direct: self.direct,
            ..Request::default()
        }
    }

    fn judge(&self, request: Request<'_>) -> Result<(), Denied> {
        match self.table.decide(&request) {
            Decision::Decided(Verdict::Deny, why) => Err(Denied(why.to_string())),
            Decision::Decided(Verdict::Allow, _) | Decision::Open => Ok(()),
        }
    }
}

/// Whether a client at `client` is refused by its address alone, before it takes a
/// worker; `Some` names the rule.
pub(crate) fn refused_at_accept(table: &RuleTable, client: IpAddr) -> Option<Denied> {
    match table.decide(&Request { client: Some(client), ..Request::default() }) {
        Decision::Decided(Verdict::Deny, why) => Some(Denied(why.to_string())),
        _ => None,
    }
}
