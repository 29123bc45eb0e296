//! The relay's guarantees hold for each copying strategy (`--relay splice|copy`): bytes
//! arrive whole and in order, small messages and bursts alike, half-close is passed on,
//! a reset ends the session, and the idle timeout closes a silent session.

mod common;

use burrowd::Config;
use burrowd::config::RelayMode;
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::Duration;

fn proxy_with(mode: RelayMode, idle_timeout: Option<Duration>) -> (burrowd::Server, SocketAddr) {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.relay = mode;
    config.idle_timeout = idle_timeout;
    start(config)
}

#[test]
fn bursts_and_small_messages_arrive_whole_then_half_close_passes_on() {
    for mode in relay_modes() {
        let (_server, proxy) = proxy_with(mode, None);
        let mut client = socks5_connect(proxy, echo_server("127.0.0.1:0"));
        // Small messages: each echoed before the next is sent.
        for i in 0..100u8 {
            let msg = [i; 64];
            t!(client.write_all(&msg));
            let mut back = [0u8; 64];
            t!(client.read_exact(&mut back));
            assert_eq!(back, msg, "{mode:?}: message {i}");
        }
        // A burst larger than any pipe or buffer, then FIN: all of it comes back, then EOF.
        let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut writer = t!(client.try_clone());
        let sent = data.clone();
        let sender = thread::spawn(move || {
            t!(writer.write_all(&sent));
            t!(writer.shutdown(Shutdown::Write));
        });
        let echoed = read_to_end(&mut client);
        sender.join().unwrap();
        assert!(echoed == data, "{mode:?}: {} bytes back of {}, or different", echoed.len(), data.len());
    }
}

#[test]
fn a_reset_from_the_target_ends_the_session() {
    for mode in relay_modes() {
        let (_server, proxy) = proxy_with(mode, None);
        let target = serve_tcp("127.0.0.1:0", |mut stream| {
            let mut byte = [0u8; 1];
            let _ = stream.read_exact(&mut byte);
            // Linger 0: close sends RST instead of FIN.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        });
        let mut client = socks5_connect(proxy, target);
        t!(client.write_all(b"x"));
        let mut buf = [0u8; 16];
        match client.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("{mode:?}: expected the session to end, got {other:?}"),
        }
    }
}

#[test]
fn a_silent_session_is_closed_at_the_idle_timeout() {
    for mode in relay_modes() {
        let (_server, proxy) = proxy_with(mode, Some(Duration::from_millis(200)));
        let mut client = socks5_connect(proxy, echo_server("127.0.0.1:0"));
        t!(client.write_all(b"ping"));
        let mut back = [0u8; 4];
        t!(client.read_exact(&mut back));
        assert_eq!(&back, b"ping");
        // The read timeout (TIMEOUT) is far beyond the idle timeout: EOF, not a timeout.
        assert_eq!(read_to_end(&mut client), b"", "{mode:?}");
    }
}
