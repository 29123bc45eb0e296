//! A real subnet broadcast through UDP ASSOCIATE, between two network namespaces that
//! scripts/broadcast-netns.sh creates and removes. Where namespaces cannot be made (not
//! root, no `ip`), the script says "skipped: ..." and this test passes, printing why.

use std::process::Command;

#[test]
fn a_subnet_broadcast_through_udp_associate_reaches_the_peer_namespace() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broadcast-netns.sh");
    let child = Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_burrowd"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run scripts/broadcast-netns.sh");
    // the script names its namespaces after its own process id
    let tag = format!("burrowd-bc{}-", child.id());
    let output = child.wait_with_output().expect("wait for the script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if let Some(reason) = stdout.lines().find(|line| line.starts_with("skipped:")) {
        println!("{reason}");
        return;
    }
    assert!(output.status.success() && stdout.contains("PASS:"), "script failed:\n{stdout}\n{stderr}");
    let namespaces = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let left = String::from_utf8_lossy(&namespaces.stdout);
    assert!(!left.contains(&tag), "namespaces left behind: {left}");
}
