//! What the fuzz targets share: the byte format of the `xds_snapshot` target's input, read by the target
//! and written by the seed generator (`examples/xds_seeds.rs`).
#![forbid(unsafe_code)]

pub mod xds_input;
