//! `-L` URLs as users give them: `socks://` and `socks5://` differ in SOCKS4, and bad URLs
//! stop the binary at start-up with exit 2 and one line naming the value.

mod common;

use burrowd::wire::addr::Addr;
use burrowd::wire::socks4;
use common::*;
use std::io::Write;

#[test]
fn socks_serves_socks4_and_socks5_does_not() {
    let target = echo_server("127.0.0.1:0");
    let (_server, addrs) = start_urls(&["socks://127.0.0.1:0", "socks5://127.0.0.1:0"], &[]);

    let mut client = connect(addrs[0]);
    let reply = socks4_request(&mut client, socks4::Command::Connect, Addr::Ip(target), b"");
    assert_eq!(reply.code, socks4::ReplyCode::Granted);
    assert_echoes(client, b"socks4 via socks://");

    let mut client = connect(addrs[1]);
    t!(client.write_all(&socks4_request_bytes(socks4::Command::Connect, Addr::Ip(target), b"")));
    assert_closed_without_reply(&mut client);
    assert_echoes(socks5_connect(addrs[1], target), b"socks5 via socks5://");
}

#[test]
fn bad_urls_exit_2_with_one_line_naming_them() {
    let table: &[(&[&str], &str)] = &[
        (&["-L", "https://:8080"], "-L https://:8080: unknown scheme \"https\""),
        (&["-L", "tcp://127.0.0.1:0"], "-L tcp://127.0.0.1:0: missing target"),
        (&["-L", "tcp://127.0.0.1:99999/h:1"], "-L tcp://127.0.0.1:99999/h:1: bad port \"99999\""),
        (&["-L", "udp://127.0.0.1:0/h:53?ttl=soon"], "-L udp://127.0.0.1:0/h:53?ttl=soon: bad ttl"),
        (&["-F", "socks5://u:secret@127.0.0.1"], "-F socks5://u:***@127.0.0.1: missing :PORT"),
    ];
    for (args, want) in table {
        let output = run_burrowd(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("secret"), "the password stays out of the message");
    }
}
