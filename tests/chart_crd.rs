//! The chart ships the CRD as a file (Helm installs `crds/` before templates); it must be
//! exactly what the binary generates from the Rust types, or `kubectl apply` would accept
//! policies the daemon rejects (or the reverse). Fix a failure with `charts/tideshift/update-crd`.

use std::path::Path;
use std::process::Command;

#[test]
fn chart_crd_matches_tideshift_crd_output() {
    let output = Command::new(env!("CARGO_BIN_EXE_tideshift"))
        .arg("crd")
        .output()
        .expect("run `tideshift crd`");
    assert!(
        output.status.success(),
        "`tideshift crd` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated = String::from_utf8(output.stdout).expect("`tideshift crd` prints UTF-8");

    let chart_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/tideshift/crds/shiftpolicies.yaml");
    let shipped = std::fs::read_to_string(&chart_file)
        .unwrap_or_else(|e| panic!("read {}: {e}", chart_file.display()));

    if generated != shipped {
        let first_difference = generated
            .lines()
            .zip(shipped.lines())
            .enumerate()
            .find(|(_, (g, s))| g != s)
            .map(|(i, (g, s))| format!("line {}: generated `{g}`, chart has `{s}`", i + 1))
            .unwrap_or_else(|| {
                format!(
                    "one is a prefix of the other ({} vs {} lines)",
                    generated.lines().count(),
                    shipped.lines().count()
                )
            });
        panic!(
            "{} differs from `tideshift crd` ({first_difference}); run charts/tideshift/update-crd",
            chart_file.display()
        );
    }
}

#[test]
fn chart_crd_is_the_shiftpolicy_crd() {
    let chart_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/tideshift/crds/shiftpolicies.yaml");
    let shipped = std::fs::read_to_string(&chart_file)
        .unwrap_or_else(|e| panic!("read {}: {e}", chart_file.display()));
    let crd: serde_yaml::Value = serde_yaml::from_str(&shipped).expect("the chart CRD is YAML");
    assert_eq!(crd["kind"].as_str(), Some("CustomResourceDefinition"));
    assert_eq!(
        crd["metadata"]["name"].as_str(),
        Some("shiftpolicies.tideshift.io")
    );
    assert_eq!(crd["spec"]["scope"].as_str(), Some("Namespaced"));
    let served_versions: Vec<&str> = crd["spec"]["versions"]
        .as_sequence()
        .expect("spec.versions is a list")
        .iter()
        .filter(|v| v["served"].as_bool() == Some(true))
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(served_versions, vec!["v1alpha1"]);
    assert!(
        crd["spec"]["versions"][0]["subresources"]["status"].is_mapping(),
        "the daemon patches shiftpolicies/status, so the CRD must enable the status subresource"
    );
}
