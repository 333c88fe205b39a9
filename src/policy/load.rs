//! Reading a `ShiftPolicy` from YAML text or a file, with errors that name the field.

use std::path::Path;

use super::ShiftPolicy;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

pub fn load_file(path: &Path) -> Result<ShiftPolicy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Invalid {
        origin: path.display().to_string(),
        message: e.to_string(),
    })?;
    load_str(&text, &path.display().to_string())
}

pub fn load_str(text: &str, origin: &str) -> Result<ShiftPolicy, PolicyError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| PolicyError::Invalid {
        origin: origin.to_string(),
        message: format!("{}: {}", e.path(), e.inner()),
    })
}
