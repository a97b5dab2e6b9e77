//! Printing a [`Project`] as YAML, the default format of `compose config`.

use crate::model::Project;

/// The project as YAML with compose-spec keys (the same model `--format json` prints).
pub fn to_yaml(project: &Project) -> Result<String, String> {
    serde_saphyr::to_string(project).map_err(|e| format!("cannot print the model as YAML: {e}"))
}
