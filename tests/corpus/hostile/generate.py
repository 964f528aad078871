#!/usr/bin/env python3
"""Regenerates the hostile-record corpus: one file per record, and manifest.toml.

Python 3 standard library only; deterministic (fixed ids, times and sizes), so running it again
produces byte-identical files and `git diff` stays empty:

    python3 tests/corpus/hostile/generate.py

Each record is written as the raw bytes of a Kafka record's value. Its key, headers (content type,
CloudEvents binary-mode `ce_*` attributes) and the expected outcome go into manifest.toml, which
tests/e2e/corpus.rs reads. See README.md for what each expectation means.
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

KEY = "c-hostile"
TIME = "2026-01-05T10:00:00Z"
TIME_SECONDS = 1767607200  # TIME as Unix seconds
PAYLOAD_LIMIT = 256 * 1024  # patron_codec::Limits::default().max_payload_bytes
DEEP = 100_000  # nesting levels of the deep JSON records

PROTOBUF = "application/protobuf"
STRUCTURED = "application/cloudevents+json"
BINARY = "application/json"


def event_id(n):
    """A fixed, valid, non-nil UUID per record."""
    return f"7e57c0de-0000-4000-8000-{n:012x}"


# --- protobuf, by hand (patron.events.v1.CustomerEvent; see proto/patron/events/v1) ---------------


def varint(n):
    n &= (1 << 64) - 1  # negative int64 values are ten-byte two's complement varints
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(field, wire_type):
    return varint(field << 3 | wire_type)


def uint(field, n):
    return tag(field, 0) + varint(n)


def blob(field, data):
    if isinstance(data, str):
        data = data.encode()
    return tag(field, 2) + varint(len(data)) + data


def money(minor_units, currency):
    return uint(1, minor_units) + blob(2, currency)


def timestamp(seconds, nanos=0):
    return uint(1, seconds) + (uint(2, nanos) if nanos else b"")


def purchase_body(order_id="o-1", amount=None, items=()):
    body = blob(1, order_id)
    if amount is not None:
        body += blob(2, amount)
    for sku, quantity in items:
        body += blob(3, blob(1, sku) + uint(2, quantity))
    return body


def envelope(n=None, eid=None, customer=KEY, seconds=TIME_SECONDS, source="corpus",
             purchase=None, extra=None, event_id_bytes=None):
    out = b""
    if event_id_bytes is not None:
        out += blob(1, event_id_bytes)
    elif eid is not None or n is not None:
        out += blob(1, eid or event_id(n))
    if customer:
        out += blob(2, customer)
    if seconds is not None:
        out += blob(3, timestamp(seconds))
    if source:
        out += blob(4, source)
    if extra is not None:
        out += blob(5, extra)
    if purchase is None:
        purchase = purchase_body(amount=money(4999, "EUR"))
    out += blob(10, purchase)
    return out


def nested_struct(levels):
    """google.protobuf.Struct {"a": {"a": ... {"a": "bottom"}}}, `levels` deep."""
    value = blob(3, "bottom")  # Value.string_value
    for _ in range(levels):
        struct_ = blob(1, blob(1, "a") + blob(2, value))  # Struct.fields entry {key, value}
        value = blob(5, struct_)  # Value.struct_value
    return blob(1, blob(1, "a") + blob(2, value))


# --- CloudEvents JSON ------------------------------------------------------------------------------


def json_text(value):
    """Compact JSON with keys in a fixed order (the generator's own, for byte-stable output)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json_text(k)}:{json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(v) for v in value) + "]"
    if isinstance(value, str):
        out = '"'
        for ch in value:
            if ch in '"\\':
                out += "\\" + ch
            elif ord(ch) < 0x20:
                out += f"\\u{ord(ch):04x}"
            else:
                out += ch
        return out + '"'
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, Raw):
        return value.text
    return str(value)


class Raw:
    """JSON text inserted verbatim (numbers Python would print differently, deep nesting)."""

    def __init__(self, text):
        self.text = text


def cloudevent(n=None, eid=None, time=TIME, subject=KEY, data=None, drop=(), **overrides):
    event = {
        "specversion": "1.0",
        "id": eid or event_id(n),
        "source": "corpus",
        "type": "patron.purchase.v1",
        "subject": subject,
        "time": time,
        "data": data if data is not None else purchase_data(),
    }
    event.update(overrides)
    for key in drop:
        event.pop(key, None)
    return json_text(event).encode()


def purchase_data(order_id="o-1", minor_units=4999, currency="EUR", **extra):
    data = {"order_id": order_id, "amount": {"minor_units": minor_units, "currency": currency}}
    data.update(extra)
    return data


def deep_array(levels):
    return Raw("[" * levels + "]" * levels)


# --- the corpus ------------------------------------------------------------------------------------

RECORDS = []


def record(file, payload, expect, why, content_type=None, key=KEY, key_hex=None, headers=(),
           event_id_=None):
    RECORDS.append(dict(file=file, payload=payload, expect=expect, why=why,
                        content_type=content_type, key=key, key_hex=key_hex,
                        headers=list(headers), event_id=event_id_))


def ce_headers(n, time=TIME, **overrides):
    headers = {
        "ce_specversion": "1.0",
        "ce_id": event_id(n),
        "ce_source": "corpus",
        "ce_type": "patron.purchase.v1",
        "ce_subject": KEY,
        "ce_time": time,
    }
    headers.update(overrides)
    return [{"name": k, "value": v} for k, v in headers.items()]


def build():
    valid = envelope(1)

    # Protobuf.
    record("pb-truncated.pb", valid[: len(valid) - 7], "undecodable",
           "a valid purchase cut off inside its body", PROTOBUF)
    record("pb-empty.pb", b"", "missing_field",
           "zero bytes: a protobuf message with every field absent", PROTOBUF)
    record("pb-wrong-wire-type.pb",
           uint(1, 12345) + envelope(customer=KEY), "undecodable",
           "event_id (a string, wire type 2) sent as a varint (wire type 0)", PROTOBUF)
    record("pb-wrong-wire-type-nested.pb",
           envelope(3, purchase=purchase_body(amount=blob(1, b"\x01\x02") + blob(2, "EUR"))),
           "undecodable", "amount.minor_units (int64, a varint) sent length-delimited", PROTOBUF)
    record("pb-varint-overflow.pb",
           envelope(4, purchase=purchase_body(
               amount=tag(1, 0) + b"\xff" * 10 + b"\x01" + blob(2, "EUR"))),
           "undecodable", "minor_units as an 11-byte varint: beyond 64 bits", PROTOBUF)
    record("pb-invalid-utf8.pb", envelope(event_id_bytes=b"7e57c0de-\xff\xfe-not-utf8"),
           "undecodable", "event_id holds bytes that are not UTF-8", PROTOBUF)
    record("pb-negative-amount.pb",
           envelope(5, purchase=purchase_body(amount=money(-500, "EUR"))),
           "negative_amount", "minor_units -500", PROTOBUF)
    record("pb-overflowing-amount.pb",
           envelope(6, purchase=purchase_body(amount=money(2**63 - 1, "EUR"))),
           "invalid_amount", "minor_units i64::MAX, beyond MAX_ABS_MINOR_UNITS (10^18)", PROTOBUF)
    record("pb-year-1.pb", envelope(7, seconds=-62135596800), "timestamp_out_of_range",
           "occurred_at 0001-01-01T00:00:00Z", PROTOBUF)
    record("pb-year-9999.pb", envelope(8, seconds=253402300799), "timestamp_out_of_range",
           "occurred_at 9999-12-31T23:59:59Z", PROTOBUF)
    record("pb-unknown-currency.pb",
           envelope(9, purchase=purchase_body(amount=money(100, "ZZZ"))),
           "unknown_currency", "currency ZZZ is not ISO 4217", PROTOBUF)
    record("pb-missing-amount.pb", envelope(10, purchase=purchase_body()), "missing_field",
           "a purchase without its amount", PROTOBUF)
    record("pb-missing-event-id.pb", envelope(), "missing_field", "no event_id", PROTOBUF)
    record("pb-huge-string.pb",
           envelope(11, purchase=purchase_body(order_id="o" * (PAYLOAD_LIMIT + 1024),
                                               amount=money(1, "EUR"))),
           "payload_too_large", "a 257 KiB order_id: over the 256 KiB payload limit", PROTOBUF)
    record("pb-long-source.pb", envelope(12, source="s" * 10_000), "invalid_field",
           "a 10,000-character source: under the payload limit, over the field's (128)",
           PROTOBUF)
    record("pb-deep-nesting.pb", envelope(13, extra=nested_struct(2_000)), "undecodable",
           "extra nested 2,000 Structs deep: beyond the decoder's recursion limit", PROTOBUF)
    record("pb-key-invalid-utf8.pb", envelope(14, customer=""), "invalid_field",
           "a valid event whose Kafka key (the customer id) is not UTF-8", PROTOBUF,
           key=None, key_hex="fffe63")

    # CloudEvents JSON, structured mode.
    good = cloudevent(20)
    record("ce-truncated.json", good[: len(good) // 2], "undecodable",
           "a valid CloudEvent cut off halfway", STRUCTURED)
    record("ce-invalid-utf8.json",
           cloudevent(21, data=purchase_data(order_id="o-NOT-UTF8")).replace(
               b"NOT-UTF8", b"\xff\xfe"),
           "undecodable", "order_id holds bytes that are not UTF-8", STRUCTURED)
    record("ce-deep-nesting.json",
           cloudevent(22, data=purchase_data(deep=deep_array(DEEP))), "undecodable",
           f"data nested {DEEP:,} arrays deep (about 200 KB): must not overflow the stack",
           STRUCTURED)
    record("ce-not-an-object.json", b"[1,2,3]", "undecodable",
           "a JSON array, not a CloudEvent object", STRUCTURED)
    record("ce-wrong-type-id.json", cloudevent(eid=Raw("12345")), "invalid_field",
           "id is a number, not a string", STRUCTURED)
    record("ce-wrong-type-amount.json",
           cloudevent(23, data={"order_id": "o-1", "amount": 4999}), "invalid_field",
           "amount is a number, not a money object", STRUCTURED)
    record("ce-wrong-type-minor-units.json",
           cloudevent(24, data=purchase_data(minor_units="lots")), "invalid_amount",
           'minor_units is the string "lots"', STRUCTURED)
    record("ce-negative-amount.json", cloudevent(25, data=purchase_data(minor_units=-1)),
           "negative_amount", "minor_units -1", STRUCTURED)
    record("ce-amount-beyond-i64.json",
           cloudevent(26, data=purchase_data(minor_units=Raw("99999999999999999999"))),
           "invalid_amount", "minor_units 10^20 - 1: beyond i64", STRUCTURED)
    record("ce-amount-beyond-i64-quoted.json",
           cloudevent(27, data=purchase_data(minor_units="-99999999999999999999")),
           "invalid_amount", "minor_units as a quoted integer below i64::MIN", STRUCTURED)
    record("ce-amount-beyond-max.json",
           cloudevent(28, data=purchase_data(minor_units=Raw("1000000000000000001"))),
           "invalid_amount", "minor_units 10^18 + 1: fits i64, beyond MAX_ABS_MINOR_UNITS",
           STRUCTURED)
    record("ce-fractional-amount.json",
           cloudevent(29, data=purchase_data(minor_units=Raw("19.99"))), "invalid_amount",
           "minor_units 19.99: money is never a float", STRUCTURED)
    record("ce-year-1.json", cloudevent(30, time="0001-01-01T00:00:00Z"),
           "timestamp_out_of_range", "time 0001-01-01T00:00:00Z", STRUCTURED)
    record("ce-year-9999.json", cloudevent(31, time="9999-12-31T23:59:59Z"),
           "timestamp_out_of_range", "time 9999-12-31T23:59:59Z", STRUCTURED)
    record("ce-unknown-currency.json", cloudevent(32, data=purchase_data(currency="ZZZ")),
           "unknown_currency", "currency ZZZ is not ISO 4217", STRUCTURED)
    record("ce-missing-id.json", cloudevent(33, drop=("id",)), "missing_field", "no id",
           STRUCTURED)
    record("ce-missing-amount.json", cloudevent(34, data={"order_id": "o-1"}), "missing_field",
           "a purchase without its amount", STRUCTURED)
    record("ce-huge-string.json",
           cloudevent(35, data=purchase_data(order_id="o" * (PAYLOAD_LIMIT + 1024))),
           "payload_too_large", "a 257 KiB order_id: over the 256 KiB payload limit", STRUCTURED)
    record("ce-long-customer-id.json", cloudevent(36, subject="c" * 1_000), "invalid_field",
           "a 1,000-character customer id (subject; no key): over the limit of 128",
           STRUCTURED, key=None)
    record("ce-nul-in-data.json", cloudevent(37, data=purchase_data(order_id="o-\u0000-1")),
           "invalid_field", "order_id holds U+0000, which PostgreSQL text cannot store",
           STRUCTURED)
    record("ce-nul-in-type.json", cloudevent(61, type="shop.order\u0000created", data={"x": 1}),
           "invalid_field",
           "an unknown type holding U+0000 (unknown types are stored as sent; no text column "
           "holds NUL)", STRUCTURED)
    record("ce-consent-purpose-spaces.json",
           cloudevent(38, type="patron.consent_changed.v1",
                      data={"purpose": "Marketing Email", "granted": True}),
           "invalid_field",
           "a consent purpose with capitals and a space (purposes are lowercase identifiers)",
           STRUCTURED)
    record("ce-forged-merge.json",
           cloudevent(39, type="patron.customers_merged.v1",
                      data={"merged_customer_id": "c-victim",
                            "link_event_id": event_id(39), "identity_kind": "email"}),
           "invalid_field",
           "a producer forging customers_merged (only the store writes merges)", STRUCTURED)
    record("ce-identity-placeholder.json",
           cloudevent(46, drop=("subject",), identitykind="device_id", identityvalue="00000000"),
           "invalid_field",
           "an event naming its customer only by a placeholder device id (no key)",
           STRUCTURED, key=None)

    # CloudEvents binary mode: attributes in ce_* headers, the data in the value.
    record("bin-negative-amount.json", json_text(purchase_data(minor_units=-7)).encode(),
           "negative_amount", "binary mode, minor_units -7", BINARY, headers=ce_headers(40))
    record("bin-deep-nesting.json", json_text(purchase_data(deep=deep_array(DEEP))).encode(),
           "undecodable", f"binary mode, data nested {DEEP:,} arrays deep", BINARY,
           headers=ce_headers(41))
    record("bin-year-9999.json", json_text(purchase_data()).encode(), "timestamp_out_of_range",
           "binary mode, ce_time 9999-12-31T23:59:59Z", BINARY,
           headers=ce_headers(42, time="9999-12-31T23:59:59Z"))
    headers = ce_headers(43)
    headers[1] = {"name": "ce_id", "hex": b"7e57\xff\xfe".hex()}
    record("bin-header-invalid-utf8.json", json_text(purchase_data()).encode(), "invalid_field",
           "binary mode, the ce_id header is not UTF-8", BINARY, headers=headers)
    record("bin-wrong-type-data.json", b'"just a string"', "invalid_field",
           "binary mode, data is a JSON string, not an object", BINARY, headers=ce_headers(44))

    # Neither format.
    record("csv.txt", b"id,amount\n1,4999\n", "unsupported_content_type",
           "text/csv is not a format Patron reads", "text/csv")

    # One id, three records: the original, an exact redelivery in the other wire format, and
    # different content under the same id.
    dup = event_id(50)
    items = [{"sku": "kettle", "quantity": 1}]
    record("dup-1-original.json",
           cloudevent(eid=dup, data=purchase_data(order_id="o-dup", items=items)), "stored",
           "valid: stored", STRUCTURED, event_id_=dup)
    record("dup-2-redelivery.pb",
           envelope(eid=dup, purchase=purchase_body(order_id="o-dup",
                                                    amount=money(4999, "EUR"),
                                                    items=[("kettle", 1)])),
           "duplicate",
           "the same event again, as protobuf: the same content, acknowledged, stored once",
           PROTOBUF, event_id_=dup)
    record("dup-3-conflict.json",
           cloudevent(eid=dup, data=purchase_data(order_id="o-dup", minor_units=5000,
                                                  items=items)),
           "duplicate_event_id_conflict", "the same id with another amount", STRUCTURED,
           event_id_=dup)


def toml_string(text):
    return json_text(text)  # a JSON string without control characters is a TOML basic string


def manifest():
    lines = [
        "# The hostile-record corpus: one entry per file, in the order tests produce them.",
        "# Generated by generate.py: edit the script, not this file. README.md explains the fields.",
        "",
    ]
    for r in RECORDS:
        lines.append("[[record]]")
        lines.append(f"file = {toml_string(r['file'])}")
        if r["content_type"]:
            lines.append(f"content_type = {toml_string(r['content_type'])}")
        if r["key"] is not None:
            lines.append(f"key = {toml_string(r['key'])}")
        if r["key_hex"] is not None:
            lines.append(f"key_hex = {toml_string(r['key_hex'])}")
        if r["headers"]:
            cells = []
            for h in r["headers"]:
                parts = ", ".join(f"{k} = {toml_string(v)}" for k, v in h.items())
                cells.append("{ " + parts + " }")
            lines.append("headers = [")
            lines.extend(f"  {c}," for c in cells)
            lines.append("]")
        lines.append(f"expect = {toml_string(r['expect'])}")
        if r["event_id"]:
            lines.append(f"event_id = {toml_string(r['event_id'])}")
        lines.append(f"why = {toml_string(r['why'])}")
        lines.append("")
    return "\n".join(lines)


def main():
    build()
    names = [r["file"] for r in RECORDS]
    if len(set(names)) != len(names):
        sys.exit("duplicate file names in the corpus")
    for r in RECORDS:
        with open(os.path.join(HERE, r["file"]), "wb") as f:
            f.write(r["payload"])
    with open(os.path.join(HERE, "manifest.toml"), "w", encoding="utf-8") as f:
        f.write(manifest())
    print(f"wrote {len(RECORDS)} records and manifest.toml to {HERE}")


if __name__ == "__main__":
    main()
