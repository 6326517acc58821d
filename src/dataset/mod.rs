//! What a keytrail dataset is: its layout, its partitioning, the crash-safe commit of a run's
//! files, the manifest of converted inputs, the quarantine, and the table definitions readers
//! are given.
//!
//! [`read`](crate::read), [`write`](crate::write), [`sql`](crate::sql) and
//! [`convert`](crate::convert) depend on this module; it depends only on [`schema`](crate::schema).

pub mod commit;
pub mod ddl;
pub mod layout;
pub mod manifest;
pub mod partitioning;
pub mod quarantine;

use std::path::{Path, PathBuf};

pub use commit::{OutputDir, OutputMode, prepare_output};
pub use layout::DatasetMarker;
pub use manifest::InputRecord;
pub use partitioning::{PartitionError, PartitionKey, Partitioning};

/// Errors reading or changing a dataset's directory. Each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: unreadable {what}: {source}")]
    Json {
        path: PathBuf,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{path}: {problem}")]
    Corrupt { path: PathBuf, problem: &'static str },
    #[error(
        "{root}: the output directory is not empty and holds no keytrail dataset; choose a new or empty directory"
    )]
    NotADataset { root: PathBuf },
    #[error(
        "{root}: the output directory already holds a keytrail dataset ({files} files); pass --incremental to add to it or --overwrite to replace it"
    )]
    AlreadyADataset { root: PathBuf, files: usize },
    #[error(
        "{root}: the dataset is partitioned by [{}] with schema version {}; this run would write [{}] with version {}: use the same --partition-by, or --overwrite",
        .existing.partition_by.join(","), .existing.schema_version, .wanted.partition_by.join(","), .wanted.schema_version
    )]
    Mismatch {
        root: PathBuf,
        existing: Box<DatasetMarker>,
        wanted: Box<DatasetMarker>,
    },
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One data file of a dataset: its path relative to the root, its rows and bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DataFile {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}
