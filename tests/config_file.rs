//! `--config FILE` and `--check` as a user runs them: the binary, real files, real sockets.

mod common;

use burrowd::wire::printable::Printable;

use burrowd::wire::socks5::{Command as Socks, ReplyCode};
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

/// Exit status, stdout, stderr of a burrowd that must stop by itself.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = run_burrowd(args);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    t!(std::fs::write(&path, text));
    path.to_str().unwrap().to_owned()
}

/// A burrowd that serves; killed when dropped, so a failing test leaves none behind.
struct Running {
    child: Child,
    log: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = spawn_child(
            Command::new(env!("CARGO_BIN_EXE_burrowd"))
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Running { child, log }
    }

    fn wait_for(&self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(TIMEOUT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line containing {needle:?}: {e}"),
            }
        }
    }

    /// The address in the next `listening on ADDR: ...` line.
    fn listening(&self) -> SocketAddr {
        let line = self.wait_for("listening on ");
        let addr = line.split("listening on ").nth(1).unwrap().rsplit_once(": ").unwrap().0;
        t!(addr.parse())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_config_file_sets_up_the_proxy_with_paths_from_its_own_directory() {
    let dir = TempDir::new("config-serve");
    write(&dir, "users", "alice:s3cret\n");
    let allowed = echo_server("127.0.0.1:0");
    let refused = echo_server("127.0.0.1:0");
    let config = write(
        &dir,
        "burrowd.conf",
        &format!(
            "# the proxy of this test\n\
             listen 127.0.0.1:0\n\
             users users          # next to this file\n\n\
             deny to 127.0.0.1 port {}\n\
             handshake-timeout 5s\n",
            refused.port()
        ),
    );
    // Started from elsewhere: the users file is found beside the config, not here.
    let proxy = Running::start(&["--config", &config]);
    let addr = proxy.listening();
    let mut session = connect(addr);
    socks5_login(&mut session, Some(("alice", "s3cret")));
    assert_eq!(socks5_request(&mut session, Socks::Connect, &ip_target(allowed)).0, ReplyCode::SUCCEEDED);
    t!(session.write_all(b"through"));
    let mut echo = [0u8; 7];
    t!(session.read_exact(&mut echo));
    assert_eq!(&echo, b"through");

    let mut denied = connect(addr);
    socks5_login(&mut denied, Some(("alice", "s3cret")));
    assert_eq!(socks5_request(&mut denied, Socks::Connect, &ip_target(refused)).0, ReplyCode::NOT_ALLOWED);
    let line = proxy.wait_for("denied by");
    assert!(line.contains(&format!("denied by {config}:5")), "the rule is named by its line: {line}");
}

#[test]
fn an_error_in_the_file_names_the_file_and_line_and_exits_2() {
    let dir = TempDir::new("config-errors");
    let good = "listen 127.0.0.1:0\n# six good lines\n\nmax-clients 8\nsocks4\nallow from 10.0.0.0/8\n";
    let table = [
        ("bogus 1\n", "7: unknown option --bogus"),
        ("max-clients\n", "7: --max-clients needs a value"),
        ("queue lots\n", "7: --queue: \"lots\" is not a whole number from 0 to 1000000"),
        ("deny to 10.0.0.0/33\n", "7: \"10.0.0.0/33\" is not an address or CIDR"),
        ("no-socks4\n", "7: --socks4 and --no-socks4 cannot both be given"),
        ("config other.conf\n", "7: --config is for the command line, not a config file"),
    ];
    for (last, want) in table {
        let config = write(&dir, "burrowd.conf", &format!("{good}{last}"));
        for check in [&[][..], &["--check"]] {
            let (code, stdout, stderr) = run(&[&["--config", &config][..], check].concat());
            assert_eq!(code, 2, "{last:?} {check:?}: {stderr}");
            assert_eq!(stderr, format!("burrowd: {config}:{want} (try --help)\n"), "{last:?} {check:?}");
            assert_eq!(stdout, "", "{last:?} {check:?}");
        }
    }
    // A missing users file is named where the config file's directory puts it.
    let config = write(&dir, "burrowd.conf", "users missing\n");
    let (code, _, stderr) = run(&["--config", &config, "--check"]);
    assert_eq!(code, 2);
    let missing = dir.path().join("missing");
    let missing = missing.display().to_string();
    assert!(stderr.starts_with(&format!("burrowd: {config}:1: --users: {}: ", Printable(&missing))), "{stderr}");
    let (code, _, stderr) = run(&["--config", "/nonexistent/burrowd.conf"]);
    assert_eq!(code, 2);
    assert!(stderr.starts_with("burrowd: --config: /nonexistent/burrowd.conf: "), "{stderr}");
}

#[test]
fn check_prints_what_the_file_and_the_command_line_make_and_the_command_line_comes_last() {
    let dir = TempDir::new("config-check");
    write(&dir, "users", "alice:one\nbob:two\n");
    let config = write(
        &dir,
        "burrowd.conf",
        "listen 127.0.0.1:1080\n\
         users users\n\
         max-clients 8\n\
         queue 3\n\
         idle-timeout 5m\n\
         allow from 127.0.0.1\n\
         F socks5://carol:s3cret@127.0.0.1:1\n",
    );
    let (code, stdout, stderr) = run(&[
        "--config",
        &config,
        "--check",
        "--max-clients",
        "16",
        "-L",
        "tcp://127.0.0.1:2222/127.0.0.1:22",
        "--deny",
        "to 10.0.0.0/8",
    ]);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    assert!(stdout.starts_with("burrowd ") && stdout.lines().next().unwrap().ends_with("the configuration is valid"));
    let services = [
        "  socks 127.0.0.1:1080     SOCKS5 login required (2 user(s)); SOCKS4/4a refused (it carries no password); \
         HTTP login required (2 user(s))",
        "  tcp 127.0.0.1:2222       forward to 127.0.0.1:22",
    ];
    let at = stdout.lines().position(|line| line == "services:").expect("a services section");
    assert_eq!(stdout.lines().skip(at + 1).take(2).collect::<Vec<_>>(), services, "{stdout}");
    for line in [
        "  hop 1                    socks5://127.0.0.1:1, login as carol (password hidden)",
        "  max-clients              16",
        "  max-clients-per-ip       8 (half of max-clients)",
        "  queue                    3",
        "  idle-timeout             300s",
        "  handshake-timeout        10s",
        "  rules                    2 (the first that matches decides)",
    ] {
        assert!(stdout.lines().any(|l| l == line), "no line {line:?} in\n{stdout}");
    }
    assert!(!stdout.contains("s3cret"), "{stdout}");
}

#[test]
fn check_binds_nothing_so_it_passes_beside_a_running_burrowd() {
    let taken = t!(TcpListener::bind("127.0.0.1:0"));
    let udp_taken = t!(UdpSocket::bind("127.0.0.1:0"));
    let tcp = t!(taken.local_addr()).to_string();
    let udp = format!("udp://{}/127.0.0.1:53", t!(udp_taken.local_addr()));
    let (code, stdout, stderr) = run(&["--check", "--listen", &tcp, "-L", &udp]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("  socks {tcp} ")), "{stdout}");
    // The same without --check does try to bind, and fails: the ports really are taken.
    let (code, _, stderr) = run(&["--listen", &tcp, "-L", &udp]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("cannot listen on {tcp}")), "{stderr}");
}

#[test]
fn check_reads_the_users_and_rules_files_and_fails_on_a_bad_one() {
    let dir = TempDir::new("config-check-files");
    let users = write(&dir, "users", "alice:one\nnocolon\n");
    let (code, stdout, stderr) = run(&["--check", "--users", &users]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    // Paths are shown as log lines show any text: quoted and escaped where not plain (a
    // Windows path's backslashes).
    assert!(stderr.starts_with(&format!("burrowd: --users: {}:2: ", Printable(&users))), "{stderr}");
    let rules = write(&dir, "rules.conf", "allow from 10.0.0.0/8\nperhaps\n");
    let (code, stdout, stderr) = run(&["--check", "--rules", &rules]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert!(stderr.starts_with(&format!("burrowd: {rules}:2: ")), "{stderr}");
}

#[test]
fn help_names_both_flags() {
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(help.contains("--config FILE") && help.contains("--check"), "{help}");
}

#[test]
fn the_example_config_is_valid_as_shipped_and_with_every_example_line_turned_on() {
    let example = t!(std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/burrowd.conf")));
    let dir = TempDir::new("config-example");
    write(&dir, "users", "alice:s3cret\n");
    write(&dir, "rules.conf", "deny to 198.51.100.0/24\n");
    let shipped = write(&dir, "burrowd.conf", &example);
    let (code, stdout, stderr) = run(&["--config", &shipped, "--check"]);
    assert_eq!(code, 0, "{stderr}");
    // What a package installs must work as installed: loopback only, so no login needed.
    assert!(stdout.contains("  socks 127.0.0.1:1080     SOCKS5 no login; SOCKS4/4a served"), "{stdout}");
    // `#name value` lines are examples; a comment has a blank after its `#`. `no-socks4`
    // is the other choice to `socks4`, so it stays off.
    let every: String = example
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(flag) if flag.starts_with(|c: char| c.is_ascii_lowercase() || c == 'L' || c == 'F') => flag,
            _ => line,
        })
        .filter(|line| *line != "no-socks4")
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(every.lines().filter(|line| !line.starts_with('#') && !line.is_empty()).count() > 30, "{every}");
    let every = write(&dir, "every.conf", &every);
    let (code, stdout, stderr) = run(&["--config", &every, "--check"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("  hop 1                    socks5://10.0.0.2:1080, login as user"), "{stdout}");
    assert!(stdout.contains("  socks 0.0.0.0:1080       SOCKS5 login required (1 user(s))"), "{stdout}");
    assert!(stdout.contains("  rules                    6 (the first that matches decides)"), "{stdout}");
}
