//! Where things are in a dataset: keytrail's metadata folder and the marker that says what the
//! dataset holds, staging areas, and which names readers treat as not-data.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::DatasetError;

/// Folder (ignored by Hive, Spark, Athena, DuckDB and DataFusion) holding keytrail's own records.
pub const META_DIR: &str = "_keytrail";
/// The file under [`META_DIR`] describing a dataset of keytrail before Delta tables
/// ([`DatasetMarker`]).
pub const MARKER_FILE: &str = "dataset.json";
/// Folder under [`META_DIR`] with one record per run, in datasets of keytrail before Delta
/// tables.
pub const RUNS_DIR: &str = "runs";
/// Folder under [`META_DIR`] with a copy of each keytrail commit's record.
pub const COMMITS_DIR: &str = "commits";
/// `_keytrail/inputs/<version>.json`: every converted input as of a version, standing in for the
/// copies of the commits up to it.
pub const INPUTS_DIR: &str = "inputs";
/// Folder under [`META_DIR`] with the record of each run publishing its files.
pub const PENDING_DIR: &str = "pending";
/// Folder under [`META_DIR`] with one quarantine folder per run.
pub const QUARANTINE_DIR: &str = "quarantine";
/// The name of a run's staging directory in the dataset root starts with this.
pub(crate) const STAGING_PREFIX: &str = ".keytrail-staging-";
/// Folder in a staging directory holding the sorted runs spilled to disk.
pub(crate) const SPILL_DIR: &str = "_spill";
/// Folder in a staging directory holding the run's quarantine until it is committed.
pub(crate) const STAGED_QUARANTINE_DIR: &str = "_quarantine";

/// Whether a file or directory name (or an object-key segment) is one Hive, Spark, Athena and
/// DataFusion treat as not-data: `.`- or `_`-prefixed.
///
/// ```
/// use keytrail::dataset::layout::is_hidden_name;
///
/// assert!(is_hidden_name("_keytrail"));
/// assert!(is_hidden_name(".keytrail-staging-1"));
/// assert!(!is_hidden_name("region=us-east-1"));
/// ```
pub fn is_hidden_name(name: &str) -> bool {
    name.starts_with(['.', '_'])
}

/// `_keytrail/dataset.json`: what kind of dataset this directory holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetMarker {
    pub schema: String,
    pub schema_version: u32,
    pub partition_by: Vec<String>,
    pub writer: String,
}

impl DatasetMarker {
    /// Parses a marker's JSON; `location` names it in the error.
    pub fn parse(json: &[u8], location: &Path) -> Result<DatasetMarker, DatasetError> {
        serde_json::from_slice(json).map_err(|source| DatasetError::Json {
            path: location.to_path_buf(),
            what: "dataset description",
            source,
        })
    }

    /// Reads the marker of the dataset in `root`.
    pub fn read(root: &Path) -> Result<DatasetMarker, DatasetError> {
        let path = root.join(META_DIR).join(MARKER_FILE);
        let json = std::fs::read(&path).map_err(super::io_error(&path))?;
        DatasetMarker::parse(&json, &path)
    }
}
