//! Config sources. The directory source reads every `*.yaml`/`*.yml` under a directory, validates each
//! resource, and keeps the last good version of anything refused; `watch` reloads it on change.

pub mod dir;

pub use dir::{DirSource, Reload};
