//! The relay's limits, in each relay mode: a session that has stopped moving ends (a FIN
//! never answered, a peer that stops reading) and gives back every descriptor, and a
//! session that moves, however slowly or unevenly, is never cut.

mod common;

use burrowd::Config;
use burrowd::config::RelayMode;
use burrowd::wire::socks5::{Command, ReplyCode};
use common::*;
use sha2::{Digest, Sha256};
use socket2::{Domain, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

const HALF_CLOSE: Duration = Duration::from_millis(500);
const IDLE: Duration = Duration::from_millis(500);
/// The proxy's clock counts whole milliseconds, so a limit may be judged passed up to one
/// early.
const CLOCK_GRAIN: Duration = Duration::from_millis(1);

/// Descriptors are counted for the whole process, so these tests run one at a time.
fn proxy_with(mode: RelayMode, idle_timeout: Option<Duration>) -> (burrowd::Server, SocketAddr) {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    config.relay = mode;
    config.idle_timeout = idle_timeout;
    config.half_close_timeout = HALF_CLOSE;
    start(config)
}

/// A target whose accepted connections come to the test, to drive by hand.
fn target_by_hand() -> (SocketAddr, crossbeam_channel::Receiver<TcpStream>) {
    let (accepted, connections) = crossbeam_channel::unbounded();
    let addr = serve_tcp("127.0.0.1:0", move |stream| {
        t!(stream.set_read_timeout(Some(TIMEOUT)));
        let _ = accepted.send(stream);
    });
    (addr, connections)
}

/// Waits until the process holds no more descriptors than `before`, once the test has
/// closed its own: the proxy kept none of the session's.
fn assert_descriptors_back_to(before: Option<usize>) {
    if let Some(before) = before {
        wait_until("the proxy closes both sockets of the session", || open_descriptors() <= Some(before));
    }
}

/// Writes a little now and then until a write fails, as one does soon after the proxy
/// has closed its end; fails the test if none has after [`TIMEOUT`].
fn assert_writes_fail(mut stream: &TcpStream) {
    let deadline = Instant::now() + TIMEOUT;
    while stream.write_all(b"anyone there?").is_ok() {
        assert!(Instant::now() < deadline, "writes still accepted after {TIMEOUT:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Streams into `stream` without end until a write fails (true) or [`TIMEOUT`] passes
/// (false). Each write gives up after a moment, so the deadline is always seen.
fn stream_until_refused(mut stream: TcpStream) -> bool {
    t!(stream.set_write_timeout(Some(Duration::from_millis(100))));
    let deadline = Instant::now() + TIMEOUT;
    let chunk = [b'x'; 16 * 1024];
    while Instant::now() < deadline {
        match stream.write(&chunk) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Reads until EOF or a reset, whatever has arrived; returns how many bytes came.
fn read_until_closed(stream: &mut TcpStream) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("expected the session to end, got {e} after {total} bytes"),
        }
    }
}

#[test]
fn after_the_clients_fin_the_session_lives_while_the_target_talks_and_ends_once_it_is_silent() {
    let _serial = one_at_a_time();
    for mode in relay_modes() {
        let (proxy, proxy_addr) = proxy_with(mode, None);
        let (target_addr, connections) = target_by_hand();
        let before = open_descriptors();

        let mut client = socks5_connect(proxy_addr, target_addr);
        let mut target = t!(connections.recv_timeout(TIMEOUT));
        t!(client.shutdown(Shutdown::Write));
        assert_eq!(read_to_end(&mut target), b"", "{mode:?}: the client's FIN reaches the target");
        // The answer trickles in for twice the limit: each piece keeps the session alive.
        let mut last_said = Instant::now();
        for _ in 0..10 {
            thread::sleep(HALF_CLOSE / 5);
            last_said = Instant::now();
            t!(target.write_all(b"tick"));
            let mut tick = [0u8; 4];
            t!(client.read_exact(&mut tick));
        }
        // Then the target stays open and says nothing.
        assert_eq!(read_to_end(&mut client), b"", "{mode:?}: the client sees the session end");
        assert!(
            last_said.elapsed() >= HALF_CLOSE - CLOCK_GRAIN,
            "{mode:?}: cut {:?} after the target's last byte",
            last_said.elapsed()
        );
        assert_writes_fail(&target);
        assert!(proxy.drain(TIMEOUT), "{mode:?}: the session ended");

        drop((client, target));
        assert_descriptors_back_to(before);
    }
}

#[test]
fn a_targets_fin_unanswered_by_a_silent_client_ends_at_the_half_close_timeout() {
    let _serial = one_at_a_time();
    for mode in relay_modes() {
        let (proxy, proxy_addr) = proxy_with(mode, None);
        let (target_addr, connections) = target_by_hand();
        let before = open_descriptors();

        let mut client = socks5_connect(proxy_addr, target_addr);
        let mut target = t!(connections.recv_timeout(TIMEOUT));
        let fin_sent = Instant::now();
        t!(target.write_all(b"bye"));
        t!(target.shutdown(Shutdown::Write));
        assert_eq!(read_to_end(&mut client), b"bye", "{mode:?}: the target's FIN reaches the client");
        // The client stays open and says nothing; the target hears the session end.
        assert_eq!(read_to_end(&mut target), b"", "{mode:?}");
        assert!(fin_sent.elapsed() >= HALF_CLOSE - CLOCK_GRAIN, "{mode:?}: cut after {:?}", fin_sent.elapsed());
        assert_writes_fail(&client);
        assert!(proxy.drain(TIMEOUT), "{mode:?}: the session ended");

        drop((client, target));
        assert_descriptors_back_to(before);
    }
}

#[test]
fn a_client_that_closes_and_stops_reading_is_cut_while_the_target_streams() {
    let _serial = one_at_a_time();
    for mode in relay_modes() {
        let (proxy, proxy_addr) = proxy_with(mode, None);
        let (refused_tx, refused) = crossbeam_channel::bounded(1);
        let target_addr = serve_tcp("127.0.0.1:0", move |stream| {
            let _ = refused_tx.send(stream_until_refused(stream));
        });
        let before = open_descriptors();

        let mut client = socks5_connect(proxy_addr, target_addr);
        let fin_sent = Instant::now();
        t!(client.shutdown(Shutdown::Write));
        // The client reads nothing more, so the proxy's writes to it stall for good.
        assert!(t!(refused.recv_timeout(2 * TIMEOUT)), "{mode:?}: the target streamed on for {TIMEOUT:?}");
        assert!(fin_sent.elapsed() >= HALF_CLOSE - CLOCK_GRAIN, "{mode:?}: cut after {:?}", fin_sent.elapsed());
        assert!(proxy.drain(TIMEOUT), "{mode:?}: the session ended");
        // What the proxy had sent is still there to read, then the end.
        read_until_closed(&mut client);

        drop(client);
        assert_descriptors_back_to(before);
    }
}

/// A client socket with a small receive buffer, through the proxy to `target`: reading
/// slowly, it opens its window to the proxy in small steps.
fn small_window_client(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let socket = t!(Socket::new(Domain::IPV4, Type::STREAM, None));
    t!(socket.set_recv_buffer_size(8 * 1024));
    t!(socket.connect_timeout(&proxy.into(), TIMEOUT));
    let mut stream: TcpStream = socket.into();
    t!(stream.set_read_timeout(Some(TIMEOUT)));
    socks5_login(&mut stream, None);
    let (code, _) = socks5_request(&mut stream, Command::Connect, &ip_target(target));
    assert_eq!(code, ReplyCode::SUCCEEDED);
    stream
}

#[test]
fn a_slow_reader_is_never_cut_by_the_idle_timeout() {
    const LEN: usize = 256 * 1024;
    let _serial = one_at_a_time();
    for mode in relay_modes() {
        // Small buffers on the proxy's side too, so its writes to the client stall and
        // resume all along instead of the kernel taking the whole transfer at once.
        let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
        config.relay = mode;
        config.idle_timeout = Some(IDLE);
        config.socket.sndbuf = Some(16 * 1024);
        let (_proxy, proxy_addr) = start(config);
        let (sent_tx, sent) = crossbeam_channel::bounded(1);
        let target = serve_tcp("127.0.0.1:0", move |mut stream| {
            let _ = sent_tx.send(send_pseudo_random(&mut stream, 0x510, LEN));
        });

        // About 130 KiB/s, four times the idle timeout in all.
        let mut client = small_window_client(proxy_addr, target);
        let mut received = Vec::with_capacity(LEN);
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let n = t!(client.read(&mut buf));
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
            assert!(Instant::now() < deadline, "{mode:?}: still reading after {TIMEOUT:?}");
            thread::sleep(Duration::from_millis(30));
        }
        let sent = t!(sent.recv_timeout(TIMEOUT));
        assert_eq!(received.len(), LEN, "{mode:?}: bytes through before the end");
        assert!(Sha256::digest(&received)[..] == sent[..], "{mode:?}: bytes differ");
    }
}

#[test]
fn a_download_in_bursts_after_a_probe_sized_request_is_never_cut_by_the_idle_timeout() {
    const BURST: usize = 128 * 1024;
    const BURSTS: usize = 6;
    let _serial = one_at_a_time();
    for mode in relay_modes() {
        let (_proxy, proxy_addr) = proxy_with(mode, Some(IDLE));
        let (target_addr, connections) = target_by_hand();
        let mut client = socks5_connect(proxy_addr, target_addr);
        let mut target = t!(connections.recv_timeout(TIMEOUT));

        // 512 bytes, like a TLS ClientHello padded to that size: exactly what the relay
        // reads while it waits, so the client's direction goes quiet in the middle of a
        // burst, and stays quiet while the answer comes.
        let request = [0x16u8; 512];
        t!(client.write_all(&request));
        let mut got = [0u8; 512];
        t!(target.read_exact(&mut got));
        let sender = thread::spawn(move || {
            let mut digests = Vec::new();
            for burst in 0..BURSTS {
                thread::sleep(IDLE / 2);
                digests.push(send_pseudo_random(&mut target, burst as u64 + 1, BURST));
            }
            digests
        });
        let mut received = Vec::new();
        let mut buf = vec![0u8; BURST];
        for burst in 0..BURSTS {
            let read = client.read_exact(&mut buf);
            assert!(read.is_ok(), "{mode:?}: burst {burst} cut short: {read:?}");
            received.push(<[u8; 32]>::from(Sha256::digest(&buf)));
        }
        assert_eq!(received, sender.join().unwrap(), "{mode:?}: bytes differ");
    }
}
