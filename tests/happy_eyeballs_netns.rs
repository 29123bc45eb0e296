//! Happy Eyeballs against a real black hole: a name whose first address swallows SYNs, in
//! a network namespace that scripts/happy-eyeballs-netns.sh creates and removes. Where
//! namespaces cannot be made, the script says "skipped: ..." and this test passes,
//! printing why.

mod common;

#[test]
fn a_black_holed_first_address_costs_one_attempt_delay() {
    common::run_netns_script("happy-eyeballs-netns.sh", "he");
}
