//! The PROXY protocol header, v1 and v2: a parse of any bytes never panics, nor does
//! asking how long the header is; whatever parses emits back (without its TLVs) to bytes
//! that parse to the same value.
#![no_main]

use burrowd::wire::proxy_header::{Header, V1_MAX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let framed = Header::wanted_len(data).ok().and_then(|len| data.get(..len));
    for bytes in [Some(data), framed].into_iter().flatten() {
        if let Ok(header) = Header::parse(bytes) {
            let mut buf = [0xa5u8; V1_MAX_LEN];
            let len = header.emit(&mut buf);
            assert_eq!(Header::parse(&buf[..len]), Ok(header));
        }
    }
});
