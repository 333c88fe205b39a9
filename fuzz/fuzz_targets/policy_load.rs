//! The policy loader on arbitrary bytes: never a panic, never a hang (libFuzzer's -timeout
//! catches slow inputs), and whatever loads is a valid policy whose events expand.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = tideshift::policy::load_bytes(data, "fuzz") {
        assert!(tideshift::policy::validate(&policy).is_ok());
        // A loaded policy must serialize and load back to the same thing.
        let text = serde_yaml::to_string(&policy).expect("a loaded policy serializes");
        let again = tideshift::policy::load_str(&text, "roundtrip").expect("round trip loads");
        assert_eq!(policy.spec, again.spec);
        let day = 86_400;
        let _ = tideshift::policy::events::expand(&policy.spec.events, 1_790_000_000, 1_790_000_000 + 2 * day);
    }
});
