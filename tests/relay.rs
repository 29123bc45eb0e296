//! What the relay does to a byte stream once a tunnel is up: every byte arrives, FIN
//! travels each way on its own, a reset ends both sides, an idle session is closed.

mod common;

use burrowd::Config;
use common::*;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// `len` deterministic bytes that are not a repeating short pattern.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    fill_pseudo_random(&mut (seed | 1), &mut data);
    data
}

#[test]
fn client_half_close_still_gets_the_late_response() {
    let (_proxy, proxy_addr) = proxy();
    let target = serve_tcp("127.0.0.1:0", |mut stream| {
        let mut request = Vec::new();
        stream.read_to_end(&mut request).unwrap(); // returns at the client's FIN
        thread::sleep(Duration::from_millis(100)); // the answer comes well after the FIN
        stream.write_all(b"late answer to: ").unwrap();
        stream.write_all(&request).unwrap();
    });
    let mut client = socks5_connect(proxy_addr, target);
    t!(client.write_all(b"question"));
    t!(client.shutdown(Shutdown::Write));
    assert_eq!(read_to_end(&mut client), b"late answer to: question");
}

#[test]
fn target_half_close_still_takes_the_late_upload() {
    let (_proxy, proxy_addr) = proxy();
    let (got_tx, got_rx) = mpsc::channel();
    let target = serve_tcp("127.0.0.1:0", move |mut stream| {
        stream.write_all(b"banner").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut upload = Vec::new();
        stream.read_to_end(&mut upload).unwrap();
        got_tx.send(upload).unwrap();
    });
    let mut client = socks5_connect(proxy_addr, target);
    assert_eq!(read_to_end(&mut client), b"banner", "the target's FIN reaches the client");
    thread::sleep(Duration::from_millis(100));
    t!(client.write_all(b"upload after the target's FIN"));
    t!(client.shutdown(Shutdown::Write));
    assert_eq!(t!(got_rx.recv_timeout(TIMEOUT)), b"upload after the target's FIN");
}

#[test]
fn sixty_four_mib_round_trip_keeps_its_sha256() {
    const LEN: usize = 64 * 1024 * 1024;
    let (_proxy, proxy_addr) = proxy();
    let target = echo_server("127.0.0.1:0");
    let client = socks5_connect(proxy_addr, target);
    let data = pattern(LEN, 0x5eed);
    let sent_digest = Sha256::digest(&data);
    let mut writer = t!(client.try_clone());
    let sender = thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = client;
    t!(reader.set_read_timeout(Some(Duration::from_secs(60))));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut received = 0;
    loop {
        let n = t!(reader.read(&mut buf));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        received += n;
    }
    sender.join().unwrap();
    assert_eq!(received, LEN);
    assert_eq!(hasher.finalize(), sent_digest);
}

/// The file transfer workload: the client sends a file name, waits for "ok", streams the
/// file and closes; the receiver saves it. The saved file must be byte-identical.
#[test]
fn file_transfer_workload_saves_an_identical_file() {
    let dir = TempDir::new("transfer");
    let source = dir.path().join("source.bin");
    t!(std::fs::write(&source, pattern(5 * 1024 * 1024 + 17, 0xf11e)));
    let inbox = dir.path().join("inbox");
    t!(std::fs::create_dir_all(&inbox));

    let (saved_tx, saved_rx) = mpsc::channel();
    let receiver_inbox = inbox.clone();
    let receiver = serve_tcp("127.0.0.1:0", move |stream| {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut name = String::new();
        reader.read_line(&mut name).unwrap();
        let path = receiver_inbox.join(name.trim());
        (&stream).write_all(b"ok\n").unwrap();
        let mut file = std::fs::File::create(&path).unwrap();
        std::io::copy(&mut reader, &mut file).unwrap();
        file.sync_all().unwrap();
        saved_tx.send(path).unwrap();
    });

    let (_proxy, proxy_addr) = proxy();
    let mut client = socks5_connect(proxy_addr, receiver);
    t!(client.write_all(b"copy.bin\n"));
    let mut ok = [0u8; 3];
    t!(client.read_exact(&mut ok));
    assert_eq!(&ok, b"ok\n");
    let mut file = t!(std::fs::File::open(&source));
    t!(std::io::copy(&mut file, &mut client));
    t!(client.shutdown(Shutdown::Write));
    let saved = t!(saved_rx.recv_timeout(Duration::from_secs(30)));
    assert_eq!(t!(std::fs::read(&saved)), t!(std::fs::read(&source)));
}

#[test]
fn a_reset_from_the_target_ends_the_client_side_promptly() {
    let (_proxy, proxy_addr) = proxy();
    let target = serve_tcp("127.0.0.1:0", |stream| {
        let mut first = [0u8; 5];
        (&stream).read_exact(&mut first).unwrap();
        // linger 0 turns the close into a reset
        socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
        drop(stream);
    });
    let mut client = socks5_connect(proxy_addr, target);
    t!(client.write_all(b"hello"));
    let mut buf = [0u8; 16];
    match client.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the tunnel to end after the target's reset, got {other:?}"),
    }
}

#[test]
fn idle_timeout_closes_a_silent_session_but_not_a_one_way_stream() {
    let mut config = Config::socks_on("127.0.0.1:0".parse().unwrap());
    // Ten times the ticker's interval below, so a loaded machine that delays a tick
    // does not make the session look idle.
    config.idle_timeout = Some(Duration::from_secs(1));
    let (_proxy, proxy_addr) = start(config);

    // silent both ways: closed. The clock starts before the relay's can, so the lower
    // bound holds however late this thread wakes.
    let target = echo_server("127.0.0.1:0");
    let started = Instant::now();
    let mut silent = socks5_connect(proxy_addr, target);
    assert_eq!(read_to_end(&mut silent), b"", "idle session closed with a FIN");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // the target talks every 100 ms for 1.5 s while the client never sends: not idle
    let ticker = serve_tcp("127.0.0.1:0", |mut stream| {
        for _ in 0..15 {
            if stream.write_all(b".").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let mut listener = socks5_connect(proxy_addr, ticker);
    assert_eq!(read_to_end(&mut listener), b"...............", "traffic one way keeps the session alive");
}
