//! The access rules' built-in protection of this host's loopback, seen from a client on
//! an address that is not loopback, in a network namespace that
//! scripts/loopback-protection-netns.sh creates and removes. Where namespaces cannot be
//! made (not root, no `ip`), the script says "skipped: ..." and this test passes, printing why.

mod common;

#[test]
fn a_remote_client_is_refused_this_hosts_loopback_unless_a_rule_opens_it() {
    common::run_netns_script("loopback-protection-netns.sh", "lp");
}
