//! SOCKS5 greeting, method choice, request and reply: a parse of any bytes never panics,
//! and whatever parses emits back to bytes that parse to the same value.
#![no_main]

use burrowd::wire::socks5::{Greeting, MethodChoice, Reply, Request};
use libfuzzer_sys::fuzz_target;

/// The prefix `wanted_len` asks for, as a reader would take it, if `data` holds it all.
fn framed(data: &[u8], wanted_len: fn(&[u8]) -> burrowd::wire::Result<usize>) -> Option<&[u8]> {
    wanted_len(data).ok().and_then(|len| data.get(..len))
}

fuzz_target!(|data: &[u8]| {
    let mut buf = [0xa5u8; 600];
    for bytes in [Some(data), framed(data, Greeting::wanted_len)].into_iter().flatten() {
        if let Ok(greeting) = Greeting::parse(bytes) {
            let len = greeting.emit(&mut buf);
            assert_eq!(Greeting::parse(&buf[..len]), Ok(greeting));
        }
    }
    if let Ok(choice) = MethodChoice::parse(data) {
        assert_eq!(MethodChoice::parse(&choice.emit()), Ok(choice));
    }
    for bytes in [Some(data), framed(data, Request::wanted_len)].into_iter().flatten() {
        if let Ok(request) = Request::parse(bytes) {
            let len = request.emit(&mut buf);
            assert_eq!(Request::parse(&buf[..len]), Ok(request));
        }
    }
    for bytes in [Some(data), framed(data, Reply::wanted_len)].into_iter().flatten() {
        if let Ok(reply) = Reply::parse(bytes) {
            let len = reply.emit(&mut buf);
            assert_eq!(Reply::parse(&buf[..len]), Ok(reply));
        }
    }
});
