//! libFuzzer's entry to the properties in checks/prometheus_response.rs (which tests/fuzz_corpora.rs
//! replays over the committed corpus).
#![no_main]

#[path = "../checks/prometheus_response.rs"]
mod prometheus_response;

libfuzzer_sys::fuzz_target!(|data: &[u8]| prometheus_response::check(data));
