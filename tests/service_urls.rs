//! Bad `-L`/`-F` URLs stop the binary at start-up: exit 2 and one line naming the value.

use std::process::Command;

#[test]
fn bad_urls_exit_2_with_one_line_naming_them() {
    let table: &[(&[&str], &str)] = &[
        (&["-L", "http://:8080"], "-L http://:8080: unknown scheme \"http\""),
        (&["-L", "tcp://127.0.0.1:0"], "-L tcp://127.0.0.1:0: missing target"),
        (&["-L", "tcp://127.0.0.1:99999/h:1"], "-L tcp://127.0.0.1:99999/h:1: bad port \"99999\""),
        (&["-L", "udp://127.0.0.1:0/h:53?ttl=soon"], "-L udp://127.0.0.1:0/h:53?ttl=soon: bad ttl"),
        (&["-F", "socks5://u:secret@127.0.0.1"], "-F socks5://u:***@127.0.0.1: missing :PORT"),
    ];
    for (args, want) in table {
        let output = Command::new(env!("CARGO_BIN_EXE_burrowd")).args(*args).output().expect("run burrowd");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("secret"), "the password stays out of the message");
    }
}
