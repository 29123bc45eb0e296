//! `--bind-out`, `same` and `--interface` on a host with several addresses and a second
//! interface whose route differs, in network namespaces that scripts/bind-out-netns.sh
//! creates and removes: targets record their peer's address for CONNECT, a chained CONNECT,
//! BIND and UDP. Where namespaces cannot be made, the script says "skipped: ..." and this
//! test passes, printing why.

mod common;

#[test]
fn every_outbound_leg_leaves_from_the_chosen_address_and_interface() {
    common::run_netns_script("bind-out-netns.sh", "bo");
}
