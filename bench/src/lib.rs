//! weft-bench: the end-to-end benchmark suite behind `bench/run`.
//!
//! - [`upstream`]: the server every target forwards to (HTTP/1.1, h2c, gRPC unary, TCP sink);
//! - [`load`]: the load generator (five workloads, open loop with coordinated-omission correction or
//!   closed loop), printing [`load::LoadResult`];
//! - [`run`]: the orchestrator that starts each target (direct, Weft with one and two hops, nginx,
//!   HAProxy, Pingora), pinned to its core, runs every workload against it in interleaved rounds,
//!   measures the proxies' CPU and memory from `/proc`, and writes [`report`]'s JSON and Markdown.
//!
//! The method is `shared/design/PERFORMANCE.md`'s; the README's "Performance" section says how to run it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod load;
pub mod proto;
pub mod report;
pub mod run;
pub mod stats;
pub mod upstream;
