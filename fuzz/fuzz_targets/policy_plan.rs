//! libFuzzer's entry to the properties in checks/policy_plan.rs (which tests/fuzz_corpora.rs
//! replays over the committed corpus).
#![no_main]

#[path = "../checks/policy_plan.rs"]
mod policy_plan;

libfuzzer_sys::fuzz_target!(|data: &[u8]| policy_plan::check(data));
