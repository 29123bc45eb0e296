//! A real subnet broadcast through UDP ASSOCIATE, between two network namespaces that
//! scripts/broadcast-netns.sh creates and removes. Where namespaces cannot be made (not
//! root, no `ip`), the script says "skipped: ..." and this test passes, printing why.

mod common;

#[test]
fn a_subnet_broadcast_through_udp_associate_reaches_the_peer_namespace() {
    common::run_netns_script("broadcast-netns.sh", "bc");
}
