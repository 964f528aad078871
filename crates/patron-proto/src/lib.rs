//! Patron's protobuf messages and gRPC services, generated from `proto/` at build time.
//!
//! Generated code is never edited by hand: change the `.proto` files instead.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Inbound customer events (`patron.events.v1`).
pub mod events {
    /// Version 1 of the event wire format.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/patron.events.v1.rs"));
    }
}

/// Lifecycle changes published for marketing automation (`patron.lifecycle.v1`).
pub mod lifecycle {
    /// Version 1 of the lifecycle topic's records.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/patron.lifecycle.v1.rs"));
    }
}

/// The query API (`patron.api.v1`).
pub mod api {
    /// Version 1 of the API.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/patron.api.v1.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every Patron proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/patron_descriptor.bin"));
