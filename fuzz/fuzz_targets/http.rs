//! HTTP heads, authorities and chunked bodies: no input panics; whatever parses emits
//! back to bytes that parse to the same value; a chunked body never takes a byte past its
//! end, however its bytes are split.
#![no_main]

use burrowd::wire::http::{self, ChunkedBody, RequestHead, ResponseHead};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let framed = http::head_len(data).ok().and_then(|len| data.get(..len));
    for bytes in [Some(data), framed].into_iter().flatten() {
        if let Ok(head) = RequestHead::parse(bytes) {
            let mut out = vec![0xa5; 1];
            head.emit(&mut out);
            assert_eq!(RequestHead::parse(&out[1..]), Ok(head.clone()));
            let _ = head.body_length();
            let _ = http::parse_authority(head.target, Some(80));
            let _ = http::parse_absolute(head.target);
        }
        if let Ok(head) = ResponseHead::parse(bytes) {
            let mut out = Vec::new();
            head.emit(&mut out);
            assert_eq!(ResponseHead::parse(&out), Ok(head.clone()));
            let _ = head.body_length("GET");
        }
    }
    let mut whole = ChunkedBody::default();
    let mut split = ChunkedBody::default();
    let taken = whole.advance(data);
    let mut at = 0;
    let mut split_result = Ok(0);
    while at < data.len() && !split.is_done() {
        let end = (at + 1 + data[at] as usize % 7).min(data.len());
        match split.advance(&data[at..end]) {
            Ok(n) => at += n,
            Err(e) => {
                split_result = Err(e);
                break;
            }
        }
    }
    match (taken, split_result) {
        (Ok(n), Ok(_)) => assert_eq!((n, whole.is_done()), (at, split.is_done())),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("one pass {a:?}, split {b:?}"),
    }
    let _ = burrowd::wire::base64::decode(data).map(|bytes| assert_eq!(burrowd::wire::base64::encode(&bytes).as_bytes(), data));
});
