//! SOCKS4/4a request and reply: a parse of any bytes never panics, and whatever parses
//! emits back to bytes that parse to the same value.
#![no_main]

use burrowd::wire::socks4::{Reply, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = [0xa5u8; 600];
    let framed = Request::wanted_len(data).ok().and_then(|len| data.get(..len));
    for bytes in [Some(data), framed].into_iter().flatten() {
        if let Ok(request) = Request::parse(bytes) {
            let len = request.emit(&mut buf);
            assert_eq!(Request::parse(&buf[..len]), Ok(request));
        }
    }
    if let Ok(reply) = Reply::parse(data) {
        assert_eq!(Reply::parse(&reply.emit()), Ok(reply));
    }
});
