//! Where demand comes from. One trait, one file per implementation.
pub mod exporter;
pub mod trace;
