//! Istio resources as Rust types: parsing (with file and line), defaults, and validation (the analyzer).
//!
//! Pure: no I/O, no async. weftd and `weft analyze` both call [`parse_file`] and [`analyze`]; a problem is a
//! [`Diagnostic`] whose `Display` is the analyzer format `file:line: Kind namespace/name: field: message`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod analyze;
pub mod codes;
pub mod diagnostic;
pub mod duration;
pub mod host;
pub mod mesh;
pub mod networking;
pub mod parse;
pub mod resource;
pub mod security;
pub mod telemetry;

pub use analyze::analyze;
pub use diagnostic::{Diagnostic, Severity};
pub use duration::Duration;
pub use mesh::MeshConfig;
pub use parse::{parse_file, Parsed};
pub use resource::{Kind, ObjectMeta, Resource, ResourceKey, Spec};
