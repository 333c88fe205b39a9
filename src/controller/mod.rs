//! controller
pub mod cli;
