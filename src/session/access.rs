//! A session's standing with the access rules (`config::rules`): the table in force when
//! it started, and what is known of it so far, asked at each step that learns more.
//!
//! The ways out of this host (`outbound`, a BIND's listener and peer, a UDP datagram to a
//! target) take an [`Allowed`] proof, which only a final answer gives: a question the
//! rules cannot decide with what is known here is refused, never taken for an allow.

use crate::config::rules::{Allowed, Cmd, Decision, Refused, Request, RuleTable, Verdict};
use crate::net::negotiation::{HandshakeError, Negotiation};
use crate::wire::addr::{Addr, TargetAddr};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
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
    /// A `tcp://` or `udp://` client, whose target the operator chose.
    forward: bool,
}

/// A request the rules refuse, and why: the rule (or default) that refused it, or the
/// rule that could not be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied(String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Proof that a request went through [`Access::hear`]; every command takes one.
pub(crate) struct Heard(());

/// Why a heard request goes no further: the client was reclaimed before it was heard
/// (no reply), or the rules refuse it as far as they can tell yet.
pub(crate) enum NotHeard {
    Reclaimed(HandshakeError),
    Denied(Denied),
}

impl Access {
    pub(crate) fn new(table: Arc<RuleTable>, client: IpAddr, direct: bool) -> Self {
        Access { table, client, user: None, direct, forward: false }
    }

    /// The standing of a `tcp://` or `udp://` client: judged on its address (and no
    /// login), since the operator chose where it goes.
    pub(crate) fn for_forward(table: Arc<RuleTable>, client: IpAddr, direct: bool) -> Self {
        Access { forward: true, ..Access::new(table, client, direct) }
    }

    /// The client's address, as the rules judge it.
    pub(crate) fn client(&self) -> IpAddr {
        self.client
    }

    pub(crate) fn logged_in(&mut self, user: &[u8]) {
        self.user = Some(user.to_vec());
    }

    /// The one step every SOCKS request passes through once its bytes are in: the client
    /// may no longer be reclaimed (what it waits for now is our work), and the rules are
    /// asked about `cmd` to `target` as far as they can answer before any name is resolved
    /// (UDP ASSOCIATE, and a BIND for anyone, about the command alone).
    pub(crate) fn hear(&self, negotiation: &mut Negotiation, cmd: Cmd, target: &TargetAddr) -> Result<Heard, NotHeard> {
        negotiation.heard_request().map_err(NotHeard::Reclaimed)?;
        match (cmd, target) {
            // UDP ASSOCIATE's DST is where the client sends from, not a destination.
            (Cmd::Udp, _) => self.check_command(cmd),
            (Cmd::Bind, TargetAddr::Ip(sa)) if sa.ip().is_unspecified() => self.check_command(cmd),
            _ => self.check_target(cmd, target.as_addr()),
        }
        .map_err(NotHeard::Denied)?;
        Ok(Heard(()))
    }

    /// Asks about `cmd` to `target` before any name is resolved, to refuse early what the
    /// name, the port or the client already decide. An answer left open waits for the
    /// addresses, which [`Access::permit_address`] or [`Access::permit_upstream`] judge.
    pub(crate) fn check_target(&self, cmd: Cmd, target: Addr<'_>) -> Result<(), Denied> {
        match self.table.decide(&self.destination(cmd, target)) {
            Decision::Decided(Verdict::Deny, why) => Err(Denied(format!("denied by {why}"))),
            Decision::Decided(Verdict::Allow, _) | Decision::Open(_) => Ok(()),
        }
    }

    /// The final answer for `cmd` to `target` sent as it is to the upstream chain, where
    /// names are resolved: no address is known here, so an address rule that stands before
    /// the deciding one refuses it.
    pub(crate) fn permit_upstream<'t>(&self, cmd: Cmd, target: Addr<'t>) -> Result<Allowed<Addr<'t>>, Denied> {
        self.table.permit(&self.destination(cmd, target), target).map_err(upstream_refusal)
    }

    /// [`Access::permit_upstream`] for a target kept for a session's life (a `udp://` path).
    pub(crate) fn permit_upstream_owned(&self, cmd: Cmd, target: &TargetAddr) -> Result<Allowed<TargetAddr>, Denied> {
        self.table.permit(&self.destination(cmd, target.as_addr()), target.clone()).map_err(upstream_refusal)
    }

    /// The final answer for `cmd` to `target` reached at `address` (the target itself, a
    /// resolved address of its name, or the peer that reached a BIND).
    pub(crate) fn permit_address(
        &self,
        cmd: Cmd,
        target: Addr<'_>,
        address: SocketAddr,
    ) -> Result<Allowed<SocketAddr>, Denied> {
        let name = match target {
            Addr::Ip(_) => None,
            Addr::Domain(name, _) => Some(name),
        };
        let request = Request {
            name,
            address: Some(address.ip()),
            destination_known: true,
            port: Some(target.port()),
            ..self.facts(cmd)
        };
        self.table.permit(&request, address).map_err(|refused| match refused {
            Refused::Denied(why) => Denied(format!("{address}: denied by {why}")),
            Refused::Undecided(rule) => Denied(format!("{address}: denied: {rule} cannot be decided")),
        })
    }

    /// The final answer for `cmd` to `target` on a peer an upstream hop `reported`: an
    /// address is judged as one reached here; a name cannot be.
    pub(crate) fn permit_reported(
        &self,
        cmd: Cmd,
        target: Addr<'_>,
        reported: &TargetAddr,
    ) -> Result<Allowed<SocketAddr>, Denied> {
        match reported {
            TargetAddr::Ip(address) => self.permit_address(cmd, target, *address),
            TargetAddr::Domain(..) => {
                Err(Denied(format!("denied: {reported}, as the hop names it, cannot be decided")))
            }
        }
    }

    /// Asks about a command whose destinations are not known yet (UDP ASSOCIATE, a BIND
    /// for anyone): refused only if the rules refuse it wherever it goes; each destination
    /// is judged in full when it is known.
    pub(crate) fn check_command(&self, cmd: Cmd) -> Result<(), Denied> {
        match self.table.decide(&self.facts(cmd)) {
            Decision::Decided(Verdict::Deny, why) => Err(Denied(format!("denied by {why}"))),
            Decision::Decided(Verdict::Allow, _) | Decision::Open(_) => Ok(()),
        }
    }

    fn destination<'a>(&'a self, cmd: Cmd, target: Addr<'a>) -> Request<'a> {
        let (name, address) = match target {
            Addr::Ip(sa) => (None, Some(sa.ip())),
            Addr::Domain(name, _) => (Some(name), None),
        };
        Request { name, address, destination_known: true, port: Some(target.port()), ..self.facts(cmd) }
    }

    fn facts(&self, cmd: Cmd) -> Request<'_> {
        Request {
            client: Some(self.client),
            user: Some(self.user.as_deref()),
            cmd: Some(cmd),
            direct: self.direct,
            forward: self.forward,
            ..Request::default()
        }
    }
}

fn upstream_refusal(refused: Refused<'_>) -> Denied {
    match refused {
        Refused::Denied(why) => Denied(format!("denied by {why}")),
        Refused::Undecided(rule) => {
            Denied(format!("denied: {rule} cannot be decided for a name sent upstream (it needs the address)"))
        }
    }
}

/// Whether a client at `client` is refused by its address alone, before it takes a
/// worker; `Some` names the rule.
pub(crate) fn refused_at_accept(table: &RuleTable, client: IpAddr) -> Option<Denied> {
    match table.decide(&Request { client: Some(client), ..Request::default() }) {
        Decision::Decided(Verdict::Deny, why) => Some(Denied(format!("denied by {why}"))),
        _ => None,
    }
}
