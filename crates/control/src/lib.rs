//! weftd, the control plane, as a library: config sources, the service registry, the model, translation
//! to Envoy xDS, and the ADS server with its debug endpoints.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod model;
pub mod registry;
pub mod translate;
