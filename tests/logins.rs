//! Logins that never open by accident: the users-file format, user rules on the raw login,
//! a users file with no users refused at start-up, and passwords kept out of error lines.
//! (A reload by SIGHUP, which needs the binary and a signal, is in binary.rs.)

mod common;

use burrowd::Config;
use burrowd::config::rules::{RuleSource, Rules, Verdict};
use burrowd::config::{ServiceSpec, SocksSpec};
use burrowd::wire::printable::Printable;
use burrowd::wire::socks5::{Command, Greeting, method};
use burrowd::wire::userpass;
use common::*;
use std::io::{Read, Write};
use std::net::SocketAddr;

/// Logs in with raw bytes and returns the RFC 1929 status (0 is success), or `None` if
/// the server closed instead of answering.
fn login_status(proxy: SocketAddr, user: &[u8], password: &[u8]) -> Option<u8> {
    let mut stream = connect(proxy);
    let mut buf = [0u8; 600];
    let len = Greeting { methods: &[method::USER_PASS] }.emit(&mut buf);
    t!(stream.write_all(&buf[..len]));
    let mut choice = [0u8; 2];
    t!(stream.read_exact(&mut choice));
    assert_eq!(choice, [5, method::USER_PASS], "a login is asked for");
    let len = userpass::Request { user, password }.emit(&mut buf);
    t!(stream.write_all(&buf[..len]));
    let mut status = [0u8; userpass::Status::LEN];
    stream.read_exact(&mut status).ok().map(|()| status[1])
}

fn socks_spec(config: &mut Config) -> &mut SocksSpec {
    match &mut config.services[0] {
        ServiceSpec::Socks(socks) => socks,
        other => panic!("not SOCKS: {other:?}"),
    }
}

#[test]
fn a_users_file_takes_a_byte_order_mark_crlf_and_indented_comments() {
    let dir = TempDir::new("logins-format");
    let file = dir.path().join("users");
    // As Notepad saves it: a byte-order mark, CRLF; an indented note; a password with a
    // space and a '#' in it.
    t!(std::fs::write(&file, "\u{feff}alice:one\r\n  # note:x\r\n\r\nbob:two # three\r\n"));
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    t!(socks_spec(&mut config).users.add_file(&file));
    let (_proxy, addr) = start(config);
    assert_eq!(login_status(addr, b"alice", b"one"), Some(0), "the first user, after the byte-order mark");
    assert_eq!(login_status(addr, b"bob", b"two # three"), Some(0), "the rest of the line, CR dropped");
    assert_eq!(login_status(addr, b"bob", b"two # three\r"), Some(1));
    assert_eq!(login_status(addr, b"  # note", b"x"), Some(1), "an indented comment is no user");
}

#[test]
fn an_empty_password_a_duplicate_user_or_no_users_at_all_is_refused_naming_the_file_and_line() {
    let dir = TempDir::new("logins-bad-files");
    let table = [
        ("alice:one\nbob:\n", ":2: the password is empty"),
        ("bob:one\nalice:two\r\nbob:three\n", ":3: user bob is already on line 1"),
        ("", ": no users (a users file needs at least one NAME:PASSWORD line)"),
        ("# everyone left\n\n", ": no users (a users file needs at least one NAME:PASSWORD line)"),
    ];
    for (i, (text, want)) in table.into_iter().enumerate() {
        let file = dir.path().join(format!("users{i}"));
        t!(std::fs::write(&file, text));
        let file = file.to_str().unwrap();
        for check in [&["--check"][..], &[]] {
            let args = [&["--listen", "0.0.0.0:0", "--users", file][..], check].concat();
            let out = run_burrowd(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{text:?} {check:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            // Shown as log lines show any text: quoted where not plain (a Windows path).
            let shown = Printable(file);
            assert!(stderr.starts_with(&format!("burrowd: --users: {shown}{want} ")), "{text:?}: {stderr}");
        }
    }
    let out = run_burrowd(&["--user", "alice:", "--check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--user: the password is empty"));
}

#[test]
fn a_rule_on_a_user_matches_the_login_as_sent_whatever_its_characters() {
    let mut config = Config::socks_with_users("127.0.0.1:0".parse().unwrap(), &["josé:pw", "bob:pw", "zoë:pw"]);
    let rules = [(Verdict::Deny, "user josé"), (Verdict::Allow, "user bob"), (Verdict::Allow, "user zoë")];
    let sources = rules.iter().map(|(verdict, text)| RuleSource::Flag(*verdict, (*text).to_owned())).collect();
    config.rules = t!(Rules::load(sources));
    let (proxy, addr) = start(config);
    let target = ip_target(echo_server("127.0.0.1:0"));
    let code = |user: &str| {
        let mut stream = connect(addr);
        socks5_login(&mut stream, Some((user, "pw")));
        socks5_request(&mut stream, Command::Connect, &target).0.0
    };
    assert_eq!(code("josé"), 2, "denied by its rule");
    assert_eq!(code("zoë"), 0, "allowed by its rule, not by the default (deny after an allow)");
    assert_eq!(code("bob"), 0);
    // Printed, the name is escaped once, where it is printed.
    let mut live = connect(addr);
    socks5_login(&mut live, Some(("zoë", "pw")));
    assert_eq!(socks5_request(&mut live, Command::Connect, &target).0.0, 0);
    let table = proxy.session_table();
    assert!(table.contains(" \"zoë\" CONNECT "), "{table}");
}

#[test]
fn a_password_never_reaches_an_error_line_however_the_url_is_malformed() {
    let dir = TempDir::new("logins-redaction");
    let forms = [
        "alice:Sup3rSecret@proxy.example:1080",
        "socks5:/alice:Sup3rSecret@proxy.example:1080",
        "socks5:alice:Sup3rSecret@proxy.example:1080",
        "socks5://alice:Sup3rSecret@proxy.example",
        "socks5://alice:Sup3rSecret",
        "socks5://alice:Sup3rSecret proxy.example:1080",
        "socks5://alice:Sup3r%zzSecret@proxy.example:1080",
        "socks5://alice:Sup3rSecret@proxy.example:1080://x",
        "https://alice:Sup3rSecret@proxy.example:1080",
    ];
    for (i, url) in forms.into_iter().enumerate() {
        let config = dir.path().join(format!("burrowd{i}.conf"));
        t!(std::fs::write(&config, format!("F {url}\n")));
        let config = config.to_str().unwrap();
        for args in [&["-F", url][..], &["-L", url], &["--config", config], &["--config", config, "--check"]] {
            let out = run_burrowd(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(!stderr.contains("Sup3r") && !stderr.contains("Secret"), "{args:?}: {stderr}");
            assert!(stderr.contains(":***"), "{args:?}: it says what was hidden: {stderr}");
        }
    }
}
