//! libFuzzer's entry to the properties in checks/policy_load.rs (which tests/fuzz_corpora.rs
//! replays over the committed corpus).
#![no_main]

#[path = "../checks/policy_load.rs"]
mod policy_load;

libfuzzer_sys::fuzz_target!(|data: &[u8]| policy_load::check(data));
