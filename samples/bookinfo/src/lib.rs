//! Bookinfo for Weft: one small binary that plays any of the four Bookinfo services.
//!
//! `productpage` renders a book page from `details` and `reviews`; `reviews` v2 and v3 add star ratings from
//! `ratings`. Every outbound call goes through an explicit HTTP proxy (the Weft sidecar) when one is configured, and
//! carries the tracing and user headers the service received, so the mesh can route, trace and fault-inject.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod client;
pub mod config;
pub mod details;
pub mod headers;
pub mod json;
pub mod productpage;
pub mod ratings;
pub mod reviews;
pub mod server;

pub use config::{Args, Config, Service, Version};
pub use server::serve;
