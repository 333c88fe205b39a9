//! Every committed fuzz input, replayed as an ordinary test: each file of
//! `fuzz/corpus/<target>/` (the seeds, and the `crash-*` inputs of bugs fuzzing found) goes
//! through the very properties the fuzz target checks (`fuzz/checks/<target>.rs`). So every
//! `tests/run` holds the ground fuzzing has won without building libFuzzer; fuzzing for new
//! inputs is `fuzz/run` (docs/fuzzing.md).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../fuzz/checks/policy_load.rs"]
mod policy_load;
#[path = "../fuzz/checks/policy_plan.rs"]
mod policy_plan;
#[path = "../fuzz/checks/prometheus_response.rs"]
mod prometheus_response;

/// The files of `fuzz/corpus/<target>/`, sorted so that a failure names the same file each run.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every input of the target's corpus and fails with the list of inputs whose
/// property failed (all of them, not only the first).
fn replay(target: &str, check: fn(&[u8])) {
    let files = corpus(target);
    // An empty or missing corpus would make this test pass without checking anything.
    assert!(
        !files.is_empty(),
        "fuzz/corpus/{target}/ holds no input to replay"
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs of fuzz/corpus/{target}/ broke a property (the panic is printed above \
         each); reproduce one with `cd fuzz && cargo fuzz run -s none --debug-assertions \
         {target} <file>`:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    println!("fuzz/corpus/{target}: {} inputs replayed", files.len());
}

/// The version of `package` that a Cargo.lock pins.
fn locked_version(lock: &str, package: &str) -> Option<String> {
    let entry = format!("name = \"{package}\"\nversion = \"");
    let start = lock.find(&entry)? + entry.len();
    let end = start + lock[start..].find('"')?;
    Some(lock[start..end].to_string())
}

/// `policy_plan` decodes its input with `arbitrary`: a corpus file means the same choices here
/// and in the fuzzer only when both build the same version (the fuzz crate has its own lock).
#[test]
fn fuzz_crate_decodes_inputs_with_the_same_arbitrary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| std::fs::read_to_string(root.join(path)).expect(path);
    let ours = locked_version(&read("Cargo.lock"), "arbitrary");
    let fuzz = locked_version(&read("fuzz/Cargo.lock"), "arbitrary");
    assert!(ours.is_some(), "Cargo.lock pins no arbitrary");
    assert_eq!(
        ours, fuzz,
        "Cargo.lock and fuzz/Cargo.lock pin different versions of arbitrary"
    );
}

#[test]
fn policy_load_corpus() {
    replay("policy_load", policy_load::check);
}

#[test]
fn policy_plan_corpus() {
    replay("policy_plan", policy_plan::check);
}

#[test]
fn prometheus_response_corpus() {
    replay("prometheus_response", prometheus_response::check);
}
