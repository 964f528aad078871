//! CloudEvents binary mode: arbitrary `ce_*` header values and JSON data. The first bytes choose
//! the header values (split at 0xff), the rest is the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patron_codec::Message;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |b| *b == 0xff);
    let id = parts.next().unwrap_or_default();
    let kind = parts.next().unwrap_or_default();
    let time = parts.next().unwrap_or_default();
    let subject = parts.next().unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    let headers = [
        ("ce_specversion", b"1.0".as_slice()),
        ("ce_id", id),
        ("ce_type", kind),
        ("ce_time", time),
        ("ce_subject", subject),
        ("ce_source", b"fuzz".as_slice()),
    ];
    patron_fuzz::check(&Message {
        content_type: Some("application/json"),
        headers: &headers,
        key: Some(subject),
        payload,
    });
});
