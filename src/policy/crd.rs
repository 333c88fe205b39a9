//! The `ShiftPolicy` CustomResourceDefinition, generated from the Rust types.

use kube::CustomResourceExt;

use super::ShiftPolicy;

/// The CustomResourceDefinition of `ShiftPolicy`, as YAML.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&ShiftPolicy::crd())
}
