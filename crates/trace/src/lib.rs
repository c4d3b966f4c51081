//! Weft's distributed tracing, shared by the sidecar and the control plane.
//!
//! The sidecar (weft-proxy) uses the request-path half:
//! - [`propagation`]: read a request's trace context (W3C Trace Context, B3 single and multi header,
//!   `x-request-id`), decide whether to sample it, make this hop's context and write it upstream;
//! - [`span`]: the span model and Istio's standard span tags;
//! - [`exporter`]: a non-blocking [`Reporter`] and the background task that batches spans to a Zipkin
//!   or OpenTelemetry collector.
//!
//! weftd uses the collector half: [`store`] (recent traces, bounded) and [`collector`] (Zipkin's
//! `POST /api/v2/spans` and query API, OTLP/HTTP's `POST /v1/traces`).
//!
//! Both speak the formats in [`zipkin`] (v2 JSON) and [`otlp`] (protobuf, and JSON for reading).
//! Identifiers are in [`id`]. Nothing here knows about xDS, routes or Istio's YAML: the proxy passes in
//! what it knows ([`span::ProxyTags`], [`span::RequestTags`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod collector;
pub mod exporter;
pub mod id;
pub mod otlp;
pub mod propagation;
pub mod span;
pub mod store;
pub mod zipkin;

#[cfg(test)]
mod test_util;

pub use exporter::{Exporter, Reporter};
pub use id::{SpanId, TraceId};
pub use propagation::{inject, inject_with, Context, Incoming, Sampler};
pub use span::{Endpoint, Kind, ProxyTags, RequestTags, Span, Str};
pub use store::TraceStore;
