//! tideshift: forecast each online service's demand and shift replicas between online services
//! and batch work on one Kubernetes cluster, before the peak rather than after it.
//!
//! The modules follow the data flow: `policy` → `source` → `forecast` → `plan` → `actuate`,
//! driven by `controller` (the daemon) or `sim` (the what-if simulator).

pub mod actuate;
pub mod cli;
pub mod controller;
pub mod forecast;
pub mod plan;
pub mod policy;
pub mod sim;
pub mod source;
pub mod telemetry;
