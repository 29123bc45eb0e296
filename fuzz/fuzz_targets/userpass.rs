//! RFC 1929 request and status: a parse of any bytes never panics, and whatever parses
//! emits back to bytes that parse to the same value.
#![no_main]

use burrowd::wire::userpass::{Request, Status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = [0xa5u8; Request::MAX_LEN];
    let framed = Request::wanted_len(data).ok().and_then(|len| data.get(..len));
    for bytes in [Some(data), framed].into_iter().flatten() {
        if let Ok(request) = Request::parse(bytes) {
            let len = request.emit(&mut buf);
            assert_eq!(Request::parse(&buf[..len]), Ok(request));
        }
    }
    if let Ok(status) = Status::parse(data) {
        assert_eq!(Status::parse(&status.emit()), Ok(status));
    }
});
