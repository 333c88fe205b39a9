//! sim
pub mod cli;
