//! Patron's gRPC query API: `patron.api.v1.CustomerService`, `KpiService`,
//! `EventStoreService` and `AdminService` (CLV fits) over the read models and the event store, with bearer-token
//! authentication, `grpc.health.v1` health checking and server reflection.
//!
//! The path of a query: [`auth`] admits the call, [`customers`] validates it and asks a
//! [`ReadModels`] (the SQL one reads the projector's active generation), [`convert`] turns rows
//! into messages, and every failure becomes a status in one place, [`ApiError`]'s `From`.
//! [`telemetry`] wraps every call in a span and counts it by method and status code.

pub mod admin;
mod as_of;
pub mod auth;
pub mod cache;
mod convert;
pub mod customers;
mod error;
pub mod events;
pub mod kpi;
pub mod model;
mod page_token;
pub mod range;
pub mod read_models;
mod server;
pub mod telemetry;
pub mod wait;
pub mod watch;

pub use admin::AdminApi;
pub use auth::BearerAuth;
pub use cache::{CacheConfig, CachedReadModels};
pub use customers::CustomerApi;
pub use error::ApiError;
pub use events::EventStoreApi;
pub use kpi::KpiApi;
pub use read_models::{ReadModels, SqlReadModels};
pub use server::{
    ADMIN_SERVICE, ApiConfig, CUSTOMER_SERVICE, EVENT_STORE_SERVICE, KPI_SERVICE, TlsConfig, serve,
    serve_on,
};
