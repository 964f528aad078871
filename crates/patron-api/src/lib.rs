//! Patron's gRPC query API: `patron.api.v1.CustomerService` over the read models, with bearer-token
//! authentication, `grpc.health.v1` health checking and server reflection.
//!
//! The path of a query: [`auth`] admits the call, [`customers`] validates it and asks a
//! [`ReadModels`] (the SQL one reads the projector's active generation), [`convert`] turns rows
//! into messages, and every failure becomes a status in one place, [`ApiError`]'s `From`.

pub mod auth;
mod convert;
pub mod customers;
mod error;
pub mod model;
mod page_token;
pub mod read_models;
mod server;

pub use auth::BearerAuth;
pub use customers::CustomerApi;
pub use error::ApiError;
pub use read_models::{ReadModels, SqlReadModels};
pub use server::{ApiConfig, CUSTOMER_SERVICE, serve, serve_on};
