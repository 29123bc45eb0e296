//! The `burrowd` binary as a user runs it: flags, the listening line, and signals.

mod common;

use burrowd::wire::socks5::{self, ReplyCode};
use common::*;
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

const BIN: &str = env!("CARGO_BIN_EXE_burrowd");

/// A burrowd child on a free port; its stderr lines arrive on the channel.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    log: mpsc::Receiver<String>,
    /// Lines `wait_for` read past, for `skipped_line`.
    skipped: RefCell<Vec<String>>,
}

fn spawn(args: &[&str]) -> Proxy {
    spawn_under(&[], args)
}

/// Starts burrowd under a wrapper command such as `prlimit --nofile=16 --`.
fn spawn_under(wrapper: &[&str], args: &[&str]) -> Proxy {
    let (program, wrapper_args) = match wrapper.split_first() {
        Some((program, rest)) => (*program, rest.to_vec()),
        None => (BIN, Vec::new()),
    };
    let mut command = Command::new(program);
    command.args(wrapper_args);
    if !wrapper.is_empty() {
        command.arg(BIN);
    }
    let mut child =
        spawn_child(command.args(["--listen", "127.0.0.1:0"]).args(args).stderr(Stdio::piped()).stdout(Stdio::null()));
    let (tx, log) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut proxy = Proxy { child, addr: "0.0.0.0:0".parse().unwrap(), log, skipped: RefCell::default() };
    proxy.addr = proxy.listening_on("listening on ");
    proxy
}

/// A test that fails part-way must not leave its burrowd running.
impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn wait_for(&self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(TIMEOUT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => self.skipped.borrow_mut().push(line),
                Err(e) => panic!("no log line containing {needle:?}: {e}"),
            }
        }
    }

    /// A line that an earlier `wait_for` read past, such as a start-up warning.
    #[cfg(unix)] // only the descriptor-limit tests look for one
    fn skipped_line(&self, needle: &str) -> String {
        let skipped = self.skipped.borrow();
        let line = skipped.iter().find(|line| line.contains(needle));
        line.unwrap_or_else(|| panic!("no earlier log line containing {needle:?} in {skipped:?}")).clone()
    }

    /// The IPv4 address in the next log line of the form `... MARKER 127.0.0.1:PORT: ...`.
    fn listening_on(&self, marker: &str) -> SocketAddr {
        let line = self.wait_for(marker);
        let addr = line.split(marker).nth(1).unwrap().split(':').take(2).collect::<Vec<_>>().join(":");
        t!(addr.parse())
    }

    /// Signals by `kill`: unix only. Ctrl-C to the Windows build is checked under Wine by
    /// scripts/wine.sh.
    #[cfg(unix)]
    fn signal(&self, name: &str) {
        let status = t!(Command::new("kill").args([name, &self.child.id().to_string()]).status());
        assert!(status.success());
    }

    #[cfg(unix)] // only the tests that stop it by signal wait for its exit
    fn exit_code(&mut self) -> i32 {
        for _ in 0..200 {
            if let Some(status) = t!(self.child.try_wait()) {
                return status.code().unwrap_or(-1);
            }
            thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("burrowd did not exit within 10 s");
    }
}

#[cfg(unix)]
#[test]
fn sigint_with_a_live_session_drains_then_exits_zero() {
    let mut proxy = spawn(&["--drain-timeout", "10s"]);
    let target = echo_server("127.0.0.1:0");
    let mut session = socks5_connect(proxy.addr, target);
    proxy.signal("-INT");
    // The line comes once the listeners are closed, while the session below is still live.
    proxy.wait_for("signal received");
    assert!(std::net::TcpStream::connect(proxy.addr).is_err(), "the listener is closed at once");
    // the live session keeps working while the server drains
    t!(session.write_all(b"still here"));
    let mut echo = [0u8; 10];
    t!(session.read_exact(&mut echo));
    assert_eq!(&echo, b"still here");
    t!(session.shutdown(std::net::Shutdown::Write));
    assert_eq!(read_to_end(&mut session), b"");
    assert_eq!(proxy.exit_code(), 0);
    let summary = proxy.wait_for("shutdown:");
    assert!(summary.contains("1 sessions served"), "{summary}");
}

#[cfg(unix)]
#[test]
fn sigterm_cuts_sessions_after_the_drain_timeout_and_a_second_signal_exits_at_once() {
    let mut proxy = spawn(&["--drain-timeout", "300ms"]);
    let target = echo_server("127.0.0.1:0");
    let _session = socks5_connect(proxy.addr, target);
    proxy.signal("-TERM");
    assert_eq!(proxy.exit_code(), 0, "drain timeout passes, exit 0");
    proxy.wait_for("still open were cut");

    let mut proxy = spawn(&["--drain-timeout", "60s"]);
    let _session = socks5_connect(proxy.addr, target);
    proxy.signal("-INT");
    proxy.wait_for("signal received");
    proxy.signal("-INT");
    assert_eq!(proxy.exit_code(), 130);
}

#[cfg(unix)] // descriptor limits (RLIMIT_NOFILE)
#[test]
fn a_descriptor_limit_too_low_for_the_limits_is_named_and_admission_fits_within_it() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    // Soft and hard limit 16: nothing to raise, and room for one session at a time.
    let mut proxy = spawn_under(&["prlimit", "--nofile=16", "--"], &["--handshake-timeout", "60s"]);
    let warning = proxy.skipped_line("descriptors:");
    assert!(warning.contains("but the limit is 16") && warning.contains("serving 1 sessions at once"), "{warning}");
    // Clients that never finish their handshake would have run it out of descriptors;
    // now each makes room by closing the one before, and never starves accept.
    let mut hogs: Vec<_> = (0..16).map(|_| connect(proxy.addr)).collect();
    for hog in &mut hogs[..15] {
        assert_closed(hog);
    }
    let target = echo_server("127.0.0.1:0");
    let mut session = socks5_connect(proxy.addr, target);
    t!(session.write_all(b"alive"));
    let mut echo = [0u8; 5];
    t!(session.read_exact(&mut echo));
    assert_eq!(&echo, b"alive");
    // With its one place relaying, a further client is closed at once, not left unanswered.
    let mut refused = connect(proxy.addr);
    assert_closed(&mut refused);
    proxy.signal("-INT");
    drop(session);
    assert_eq!(proxy.exit_code(), 0);
}

#[cfg(unix)] // descriptor limits (RLIMIT_NOFILE)
#[test]
fn the_soft_descriptor_limit_is_raised_toward_what_the_limits_need() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let proxy = spawn_under(&["prlimit", "--nofile=256:20000", "--"], &["--max-clients", "100", "--queue", "10"]);
    // 64 for the process itself, 1 listener, 4 for each of the 110 places.
    let raised = proxy.skipped_line("descriptor limit raised");
    assert!(raised.contains("from 256 to 505 (hard limit 20000)"), "{raised}");
    let limits = t!(std::fs::read_to_string(format!("/proc/{}/limits", proxy.child.id())));
    let open_files = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    assert_eq!(open_files.split_whitespace().collect::<Vec<_>>()[3..5], ["505", "20000"], "{open_files}");
}

#[test]
fn a_udp_session_that_cannot_open_counts_what_it_dropped() {
    // The target name fails locally (no DNS packet is sent), so the session's outbound
    // path never opens and the datagram that started it is dropped: the log says so.
    let service = format!("udp://127.0.0.1:0/{}:53", unresolvable_name());
    let proxy = spawn(&["-L", &service]);
    let addr = proxy.listening_on("listening on udp ");
    let client = udp_socket_near(addr);
    t!(client.send_to(b"lost", addr));
    let ended = proxy.wait_for("UDP-FORWARD");
    assert!(ended.contains("0 datagram(s) up, 0 down, 1 dropped; cannot resolve"), "{ended}");
}

#[test]
fn a_udp_burst_with_bad_datagrams_amid_it_is_relayed_and_counted_exactly() {
    // The burst goes out before any echo is read, so the relay finds it queued and takes
    // it in batches: each bad datagram is dropped and counted, its neighbours pass, in order.
    let proxy = spawn(&["--udp-rcvbuf", "1M"]);
    let targets = [udp_echo_server("127.0.0.1:0"), udp_echo_server("[::1]:0")].map(ip_target);
    let association = UdpAssociation::open(proxy.addr, None);
    t!(socket2::SockRef::from(&association.socket).set_recv_buffer_size(1 << 20));
    let intruder = udp_socket_near(proxy.addr);
    let mut expected: [Vec<Vec<u8>>; 2] = Default::default();
    let mut up_bytes = 0;
    for i in 0..120 {
        let (target, payload) = (&targets[i % 2], format!("datagram {i}").into_bytes());
        match i {
            31 => t!(association.socket.send_to(b"\x00\x01\x00\x01 reserved bytes not zero", association.relay)),
            50 => t!(intruder.send_to(&datagram(0, target, &payload), association.relay)),
            77 => t!(association.socket.send_to(&datagram(2, target, &payload), association.relay)),
            _ => {
                association.send(target, &payload);
                up_bytes += payload.len() as u64;
                expected[i % 2].push(payload);
                continue;
            }
        };
    }
    let mut echoed: [Vec<Vec<u8>>; 2] = Default::default();
    for _ in 0..117 {
        let (source, payload) = association.recv();
        echoed[usize::from(source != targets[0])].push(payload);
    }
    assert!(echoed == expected, "every good datagram came back, each target's in order");
    drop(association);
    let line = proxy.wait_for("UDP-ASSOCIATE");
    let bytes = burrowd::config::units::human_bytes(up_bytes);
    let counts = format!(
        " up 117 datagrams {bytes} down 117 datagrams {bytes} dropped foreign 1 fragmented 1 malformed 1 unsendable 0 "
    );
    assert!(line.contains(&counts), "{line}");
}

#[test]
fn an_idle_listener_waits_quietly_past_the_handshake_timeout_and_serves_the_next_client() {
    // Listeners carry the clients' handshake read timeout (accepted sockets inherit it),
    // and Linux's accept honours it too: an accept that times out is no error.
    let proxy = spawn(&["--handshake-timeout", "200ms"]);
    thread::sleep(std::time::Duration::from_millis(1000));
    let target = echo_server("127.0.0.1:0");
    let mut session = socks5_connect(proxy.addr, target);
    t!(session.write_all(b"ping"));
    let mut echo = [0u8; 4];
    t!(session.read_exact(&mut echo));
    assert_eq!(&echo, b"ping");
    drop(session);
    let line = proxy.wait_for("session 1 ");
    assert!(line.contains(&format!("CONNECT {target}")), "{line}");
    let skipped = proxy.skipped.borrow();
    assert!(!skipped.iter().any(|line| line.contains("accept on")), "an idle listener logged: {skipped:?}");
}

#[test]
fn a_domain_name_cannot_forge_a_log_line() {
    let proxy = spawn(&[]);
    let mut client = connect(proxy.addr);
    socks5_login(&mut client, None);
    // An .invalid name fails locally, should anything try to resolve it.
    let name = format!("{}\nFORGED session 999 up 1 GiB", unresolvable_name());
    let (code, _) = socks5_request(&mut client, socks5::Command::Connect, &domain_target(&name, 80));
    assert_eq!(code, ReplyCode::HOST_UNREACHABLE, "a name with a control character is not a host name");
    let line = proxy.wait_for("session 1 ");
    assert!(line.contains(": reply 4 (host unreachable): refused: the name asked for is not a host name"), "{line}");
    assert!(!line.contains("FORGED"), "{line}");
}

#[test]
fn an_association_logs_its_first_foreign_datagram_once_and_names_the_real_client() {
    let proxy = spawn(&[]);
    let echo = udp_echo_server("127.0.0.2:0");
    // DST names the target, as some clients send it; the client sends from a port of its own.
    let association = UdpAssociation::open_from(proxy.addr, udp_socket_near(proxy.addr), &ip_target(echo), None);
    let client = t!(association.socket.local_addr());
    let intruder = t!(std::net::UdpSocket::bind("127.0.0.3:0"));
    for _ in 0..2 {
        t!(intruder.send_to(&datagram(0, &ip_target(echo), b"intruder"), association.relay));
    }
    association.send(&ip_target(echo), b"mine");
    assert_eq!(association.recv().1, b"mine");
    let foreign = proxy.wait_for("udp: dropped a datagram");
    let from = t!(intruder.local_addr());
    assert!(foreign.contains(&format!("session 1 udp: dropped a datagram from {from}, not the client (127.0.0.1")));
    drop(association);
    let line = proxy.wait_for("UDP-ASSOCIATE");
    assert!(line.contains(&format!(" client {client} ")), "the client as it sent, not DST: {line}");
    assert!(line.contains(" dropped foreign 2 "), "{line}");
    let skipped = proxy.skipped.borrow();
    assert!(!skipped.iter().any(|line| line.contains("udp: dropped")), "logged once: {skipped:?}");
}

#[test]
fn an_unknown_command_is_logged_as_unsupported_not_malformed() {
    let proxy = spawn(&[]);
    let mut client = connect(proxy.addr);
    socks5_login(&mut client, None);
    t!(client.write_all(&[5, 0xf0, 0, 1, 127, 0, 0, 1, 0, 80]));
    assert_eq!(read_socks5_reply(&mut client).0, ReplyCode::COMMAND_NOT_SUPPORTED);
    let line = proxy.wait_for("session 1 ");
    assert!(line.ends_with(": reply 7 (command not supported): unsupported command 0xf0"), "{line}");
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = run_burrowd(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn a_bad_flag_prints_one_line_and_exits_2() {
    for args in
        [&["--bogus"][..], &["--listen", "nowhere"], &["--max-clients", "-3"], &["--users", "/nonexistent/users"]]
    {
        let (code, _, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("burrowd: "), "{stderr}");
    }
}

#[test]
fn every_count_past_its_bound_is_one_line_naming_the_flag_and_exits_2() {
    let flags = ["--max-clients", "--queue", "--max-clients-per-ip", "--udp-max-sessions", "--udp-max-sessions-per-ip"];
    for flag in flags {
        for too_many in ["1000001", "18446744073709551615", "18446744073709551616"] {
            let (code, stdout, stderr) = run(&["--check", flag, too_many]);
            assert_eq!(code, 2, "{flag} {too_many}: {stdout}{stderr}");
            let want = format!("burrowd: {flag}: \"{too_many}\" is not a whole number from ");
            assert!(stderr.starts_with(&want) && stderr.contains(" to 1000000"), "{stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        }
        let (code, _, stderr) = run(&["--check", flag, "1000000"]);
        assert_eq!(code, 0, "{flag} at its bound is valid: {stderr}");
    }
}

#[test]
fn a_bad_rule_is_one_line_naming_it_and_exits_2() {
    let (code, _, stderr) = run(&["--allow", "from 10.0.0.0/8", "--deny", "to 10.0.0.0/33"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        "burrowd: --deny 'to 10.0.0.0/33': \"10.0.0.0/33\" is not an address or CIDR (try --help)"
    );
    let dir = TempDir::new("bad-rules");
    let file = dir.path().join("rules.conf");
    t!(std::fs::write(&file, "allow from 10.0.0.0/8\n\ndeny to *  port 99999\n"));
    let (code, _, stderr) = run(&["--rules", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    let expected = format!("burrowd: {}:3: port \"99999\" is not N or N-M (0 to 65535) (try --help)", file.display());
    assert_eq!(stderr.trim_end(), expected);
}

#[cfg(unix)] // SIGHUP
#[test]
fn sighup_reads_the_rules_and_users_files_again_and_a_bad_file_keeps_the_old_tables() {
    let target = echo_server("127.0.0.1:0");
    let dir = TempDir::new("reload");
    let (rules, users) = (dir.path().join("rules.conf"), dir.path().join("users"));
    t!(std::fs::write(&rules, format!("deny to 127.0.0.1 port {}\n", target.port())));
    t!(std::fs::write(&users, "alice:one\n"));
    let proxy = spawn(&["--rules", rules.to_str().unwrap(), "--users", users.to_str().unwrap()]);
    let code = |login| {
        let mut stream = connect(proxy.addr);
        socks5_login(&mut stream, Some(login));
        socks5_request(&mut stream, socks5::Command::Connect, &ip_target(target)).0
    };
    assert_eq!(code(("alice", "one")), ReplyCode::NOT_ALLOWED);
    // A live session is kept across the reload; new ones use the new tables.
    t!(std::fs::write(&rules, "allow to *  # opened\n"));
    t!(std::fs::write(&users, "alice:two\n"));
    proxy.signal("-HUP");
    proxy.wait_for("reload: 1 access rule(s) in force");
    proxy.wait_for("reload: 1 user(s)");
    assert_eq!(code(("alice", "two")), ReplyCode::SUCCEEDED);
    // A file that fails to parse leaves the tables in force, and says where.
    t!(std::fs::write(&rules, "deny to *\nperhaps to *\n"));
    proxy.signal("-HUP");
    let warning = proxy.wait_for("reload: the rules in force stay");
    assert!(warning.contains(&format!("{}:2", rules.display())), "{warning}");
    assert_eq!(code(("alice", "two")), ReplyCode::SUCCEEDED);
}

/// The first bytes burrowd answers a client that offers no login (SOCKS5) or carries
/// none (SOCKS4) with: `05 FF` and `00 5b` while a login is required.
#[cfg(unix)] // only the SIGHUP tests ask
fn answers_without_a_login(proxy: SocketAddr, target: SocketAddr) -> ([u8; 2], [u8; 2]) {
    let mut socks5 = connect(proxy);
    t!(socks5.write_all(&[5, 1, 0]));
    let mut choice = [0u8; 2];
    t!(socks5.read_exact(&mut choice));
    let mut socks4 = connect(proxy);
    let request =
        socks4_request_bytes(burrowd::wire::socks4::Command::Connect, burrowd::wire::addr::Addr::Ip(target), b"");
    t!(socks4.write_all(&request));
    let mut reply = [0u8; 8];
    t!(socks4.read_exact(&mut reply));
    (choice, [reply[0], reply[1]])
}

#[cfg(unix)] // SIGHUP
#[test]
fn a_reload_that_finds_the_users_file_emptied_unreadable_or_bad_keeps_the_login_and_the_old_table() {
    let target = echo_server("127.0.0.1:0");
    let dir = TempDir::new("reload-users");
    let users = dir.path().join("users");
    t!(std::fs::write(&users, "alice:pw\n"));
    let proxy = spawn(&["--users", users.to_str().unwrap()]);
    let alice_connects = || {
        let mut stream = connect(proxy.addr);
        socks5_login(&mut stream, Some(("alice", "pw")));
        socks5_request(&mut stream, socks5::Command::Connect, &ip_target(target)).0
    };
    assert_eq!(answers_without_a_login(proxy.addr, target), ([5, 0xff], [0, 0x5b]));
    let shown = users.display();
    let cases = [
        ("", format!("{shown}: no users")),
        ("# all gone\n", format!("{shown}: no users")),
        ("alice:pw\nbob:\n", format!("{shown}:2: the password is empty")),
        ("alice:pw\nalice:other\n", format!("{shown}:2: user alice is already on line 1")),
    ];
    for (text, why) in cases {
        // `: > users`, as an editor or a config tool does for a moment while it rewrites.
        t!(std::fs::write(&users, text));
        proxy.signal("-HUP");
        let warning = proxy.wait_for("reload: ");
        assert!(warning.contains("WARN") && warning.contains("the users in force for"), "{text:?}: {warning}");
        assert!(warning.contains(&why), "{text:?}: {warning}");
        assert_eq!(answers_without_a_login(proxy.addr, target), ([5, 0xff], [0, 0x5b]), "{text:?}");
        assert_eq!(alice_connects(), ReplyCode::SUCCEEDED, "{text:?}: the old table stays");
    }
    t!(std::fs::remove_file(&users));
    proxy.signal("-HUP");
    let warning = proxy.wait_for("reload: ");
    assert!(warning.contains("the users in force for") && warning.contains(&shown.to_string()), "{warning}");
    assert_eq!(answers_without_a_login(proxy.addr, target), ([5, 0xff], [0, 0x5b]));
    assert_eq!(alice_connects(), ReplyCode::SUCCEEDED);
}

#[cfg(unix)] // SIGHUP
#[test]
fn a_reload_that_reads_a_users_file_while_it_is_written_keeps_the_old_table() {
    let dir = TempDir::new("reload-changing");
    let users = dir.path().join("users");
    // Large enough that reading it takes a while, during which a writer keeps appending.
    let lines: String = (0..50_000).map(|i| format!("user{i}:pw\n")).collect();
    t!(std::fs::write(&users, format!("alice:pw\n{lines}")));
    let proxy = spawn(&["--users", users.to_str().unwrap()]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (users, stop) = (users.clone(), std::sync::Arc::clone(&stop));
        thread::spawn(move || {
            let mut file = t!(std::fs::OpenOptions::new().append(true).open(&users));
            let deadline = std::time::Instant::now() + TIMEOUT;
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) || std::time::Instant::now() > deadline {
                    break;
                }
                t!(write!(file, "late{i}:pw\n"));
                thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let mut seen = None;
    for _ in 0..50 {
        proxy.signal("-HUP");
        let line = proxy.wait_for("reload: ");
        if line.contains("changed while it was read") {
            seen = Some(line);
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    t!(writer.join());
    let warning = seen.expect("no reload saw the file change while it read it");
    let why = format!("stay: {}: changed while it was read", users.display());
    assert!(warning.contains(&why), "{warning}");
    let mut stream = connect(proxy.addr);
    socks5_login(&mut stream, Some(("alice", "pw")));
}

#[cfg(unix)] // SIGHUP
#[test]
fn a_reload_keeps_the_start_up_order_of_users_files_and_user_flags() {
    let dir = TempDir::new("reload-order");
    let users = dir.path().join("users");
    t!(std::fs::write(&users, "alice:file\nbob:b\n"));
    let proxy = spawn(&["--users", users.to_str().unwrap(), "-u", "alice:cli"]);
    let logs_in = |password: &str| {
        let mut stream = connect(proxy.addr);
        t!(stream.write_all(&[5, 1, 2]));
        let mut choice = [0u8; 2];
        t!(stream.read_exact(&mut choice));
        let mut login = vec![1, 5];
        login.extend(b"alice");
        login.push(password.len() as u8);
        login.extend(password.as_bytes());
        t!(stream.write_all(&login));
        let mut status = [0u8; 2];
        t!(stream.read_exact(&mut status));
        status[1] == 0
    };
    assert!(logs_in("cli") && !logs_in("file"), "the flag given after the file wins");
    proxy.signal("-HUP");
    proxy.wait_for("reload: 2 user(s)");
    assert!(logs_in("cli") && !logs_in("file"), "and still wins after a reload");
}

#[cfg(unix)] // SIGHUP
#[test]
fn a_reload_that_finds_a_rules_file_emptied_keeps_the_rules_in_force() {
    let target = echo_server("127.0.0.1:0");
    let dir = TempDir::new("reload-rules");
    let rules = dir.path().join("rules.conf");
    t!(std::fs::write(&rules, format!("deny to 127.0.0.1 port {}\n", target.port())));
    let proxy = spawn(&["--rules", rules.to_str().unwrap()]);
    let code = || {
        let mut stream = connect(proxy.addr);
        socks5_login(&mut stream, None);
        socks5_request(&mut stream, socks5::Command::Connect, &ip_target(target)).0
    };
    assert_eq!(code(), ReplyCode::NOT_ALLOWED);
    for text in ["", "# nothing yet\n"] {
        t!(std::fs::write(&rules, text));
        proxy.signal("-HUP");
        let warning = proxy.wait_for("reload: ");
        let why = format!("reload: the rules in force stay: {}: no rules", rules.display());
        assert!(warning.contains("WARN") && warning.contains(&why), "{text:?}: {warning}");
        assert_eq!(code(), ReplyCode::NOT_ALLOWED, "{text:?}");
    }
    // At start-up, such a file is one line naming it and exit 2.
    let (code, _, stderr) = run(&["--rules", rules.to_str().unwrap(), "--check"]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1);
    assert!(stderr.starts_with(&format!("burrowd: {}: no rules", rules.display())), "{stderr}");
}

#[cfg(unix)] // SIGUSR1
#[test]
fn sigusr1_writes_the_live_sessions_table_to_the_log() {
    let proxy = spawn(&[]);
    let target = echo_server("127.0.0.1:0");
    let mut session = socks5_connect(proxy.addr, target);
    // An echo means the relay runs, so the session shows as relaying, not still negotiating.
    t!(session.write_all(b"x"));
    t!(session.read_exact(&mut [0u8; 1]));
    proxy.signal("-USR1");
    assert!(proxy.wait_for("sessions: ").ends_with(
        "sessions: id state client local user command target out_local out_peer up_bytes down_bytes age_s idle_s carried_client"
    ));
    let row = proxy.wait_for("sessions: ");
    let client = t!(session.local_addr()).to_string();
    assert!(row.contains(&format!(" relay {client} {} - CONNECT {target} ", proxy.addr)), "{row}");
}

#[test]
fn help_lists_every_flag_with_its_default_and_version_prints() {
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--listen",
        "--user",
        "--users",
        "--max-clients",
        "--max-clients-per-ip",
        "--queue",
        "--allow RULE, --deny RULE",
        "--rules FILE",
        "--status ADDR",
        "--proxy-protocol CIDR",
        "--udp-max-sessions",
        "--handshake-timeout",
        "--connect-timeout",
        "--bind-timeout",
        "--socks4",
        "--no-socks4",
        "--idle-timeout",
        "--half-close-timeout",
        "--drain-timeout",
        "--buffer-size",
        "--keepalive",
        "--sndbuf",
        "--rcvbuf",
        "--udp-idle-timeout",
        "--udp-port-range",
        "--udp-advertise",
        "--udp-sndbuf",
        "--udp-rcvbuf",
        "-L URL",
        "-F socks5://",
        "--verbose",
        "--quiet",
        "--help",
        "--version",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
    assert!(help.contains("default: 127.0.0.1:1080"));
    let (code, version, _) = run(&["--version"]);
    assert_eq!((code, version.trim()), (0, concat!("burrowd ", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn a_port_in_use_is_one_clear_line() {
    let taken = t!(std::net::TcpListener::bind("127.0.0.1:0"));
    let addr = t!(taken.local_addr()).to_string();
    let (code, _, stderr) = run(&["--listen", &addr]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
}

/// On Windows, SO_REUSEADDR would have let the second one bind the port too and take some
/// of the first one's clients.
#[test]
fn a_second_burrowd_on_the_same_port_exits_1() {
    let first = spawn(&[]);
    let addr = first.addr.to_string();
    let (code, _, stderr) = run(&["--listen", &addr]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
}

#[test]
fn listening_beyond_loopback_without_users_warns_of_an_open_proxy() {
    // The warning comes before the listeners are bound. 192.0.2.1 (TEST-NET-1) is no
    // address of this host, so the bind then fails: no open proxy is ever reachable from
    // the network, and the process ends by itself with both lines written.
    let (code, _, stderr) = run(&["--listen", "192.0.2.1:0"]);
    let lines: Vec<_> = stderr.lines().collect();
    assert!(lines.iter().any(|line| line.contains("192.0.2.1:0") && line.contains("open proxy")), "{stderr}");
    assert_eq!(code, 1, "{stderr}");
    assert!(lines.last().is_some_and(|line| line.contains("cannot listen on 192.0.2.1:0")), "{stderr}");
}

/// The first log line of a burrowd started with `args` and `env`, its stderr a file (so that
/// `JOURNAL_STREAM` can name it, as systemd names the journal's stream).
#[cfg(unix)]
fn first_log_line(args: &[&str], journal_names_stderr: bool) -> String {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("log-form");
    let path = dir.path().join("stderr");
    let file = t!(std::fs::File::create(&path));
    let metadata = t!(file.metadata());
    let mut command = Command::new(BIN);
    command.args(["--listen", "127.0.0.1:0"]).args(args).stdout(Stdio::null()).stderr(file);
    if journal_names_stderr {
        command.env("JOURNAL_STREAM", format!("{}:{}", metadata.dev(), metadata.ino()));
    } else {
        // A stream of somebody else's, as a child of a service inherits it.
        command.env("JOURNAL_STREAM", "1:1");
    }
    let mut child = spawn_child(&mut command);
    let deadline = std::time::Instant::now() + TIMEOUT;
    let line = loop {
        let text = t!(std::fs::read_to_string(&path));
        if let Some(line) = text.lines().find(|line| line.contains("listening on")) {
            break line.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no listening line in {text:?}");
        thread::sleep(std::time::Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    line
}

/// `2026-12-07T04:26:25.123Z ` at the start of `line`, and what follows it.
#[cfg(unix)]
fn after_timestamp(line: &str) -> Option<&str> {
    let (stamp, rest) = line.split_at_checked(25)?;
    let shape = stamp.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        19 => b == b'.',
        23 => b == b'Z',
        24 => b == b' ',
        _ => b.is_ascii_digit(),
    });
    shape.then_some(rest)
}

#[cfg(unix)]
#[test]
fn log_lines_carry_a_utc_timestamp_except_in_the_journal_which_gets_priorities() {
    let plain = first_log_line(&[], false);
    let rest = after_timestamp(&plain).unwrap_or_else(|| panic!("no RFC 3339 timestamp: {plain:?}"));
    assert!(rest.starts_with("[INFO  burrowd::server] listening on 127.0.0.1:"), "{plain:?}");

    let journal = first_log_line(&[], true);
    assert!(journal.starts_with("<6>burrowd::server: listening on 127.0.0.1:"), "{journal:?}");

    let untimed = first_log_line(&["--log-time", "off"], false);
    assert!(untimed.starts_with("[INFO  burrowd::server] listening on"), "{untimed:?}");

    let journal_timed = first_log_line(&["--log-time", "on"], true);
    let rest = journal_timed.strip_prefix("<6>").and_then(after_timestamp);
    assert!(rest.is_some_and(|rest| rest.starts_with("burrowd::server: listening on")), "{journal_timed:?}");
}

#[test]
fn log_time_takes_on_or_off() {
    let out = run_burrowd(&["--log-time", "sometimes", "--check"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "burrowd: --log-time: sometimes is neither on nor off (try --help)\n"
    );
}
