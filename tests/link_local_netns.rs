//! BIND and UDP ASSOCIATE for a client on a link-local IPv6 address, whose sockets bind
//! only with the interface's scope id; in a network namespace that
//! scripts/link-local-netns.sh creates and removes. Where namespaces cannot be made, the
//! script says "skipped: ..." and this test passes, printing why.

mod common;

#[test]
fn bind_and_udp_associate_work_over_a_link_local_address() {
    common::run_netns_script("link-local-netns.sh", "ll");
}
