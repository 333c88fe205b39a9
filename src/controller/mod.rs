//! The daemon: a kube-rs `Controller` over `ShiftPolicy` objects, one loop per policy.
pub mod cli;
pub mod leader;
