//! tideshift: forecast each online service's demand and shift replicas between online services
//! and batch work on one Kubernetes cluster, before the peak rather than after it.
//!
//! The modules follow the data flow: `policy` → `source` → `forecast` → `plan` → `actuate`,
//! driven by `controller` (the daemon) or `sim` (the what-if simulator). `series` (the regular
//! time series every stage passes on) and `trace` (the one CSV trace reader) are leaves that
//! any stage may use.

pub mod actuate;
pub mod cli;
pub mod controller;
pub mod demo;
pub mod forecast;
pub mod plan;
pub mod policy;
pub mod series;
pub mod sim;
pub mod source;
pub mod telemetry;
pub mod trace;
