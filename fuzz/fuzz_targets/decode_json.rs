//! Arbitrary bytes as a `application/json` record (keyed like a real one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use patron_codec::Message;

fuzz_target!(|payload: &[u8]| {
    patron_fuzz::check(&Message {
        content_type: Some("application/json"),
        headers: &[],
        key: Some(b"c-42"),
        payload,
    });
});
