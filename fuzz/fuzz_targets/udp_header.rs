//! The UDP ASSOCIATE header: a parse of any datagram never panics, and a header that
//! parses emits back to the same bytes, leaving the payload where it was.
#![no_main]

use burrowd::wire::udp::{Header, MAX_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, payload_at)) = Header::parse(data) {
        let mut buf = [0xa5u8; MAX_HEADER_LEN];
        let len = header.emit(&mut buf);
        assert_eq!(len, payload_at);
        assert_eq!(&buf[..len], &data[..payload_at]);
    }
});
