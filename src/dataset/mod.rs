//! What a keytrail dataset is: a Delta Lake table (through delta-rs) with keytrail's layout and
//! partitioning, the commit of a run's files, the manifest of converted inputs, the quarantine,
//! and the table definitions readers are given.
//!
//! [`read`](crate::read), [`write`](crate::write), [`sql`](crate::sql) and
//! [`convert`](crate::convert) depend on this module; it depends only on [`schema`](crate::schema).

pub mod commit;
pub mod ddl;
pub mod file_reader;
pub mod layout;
pub mod manifest;
pub(crate) mod object_errors;
pub mod partitioning;
pub(crate) mod publish;
pub mod quarantine;
pub mod stats;
pub mod table;
pub mod upgrade;
pub(crate) mod upload_stream;

use std::path::{Path, PathBuf};

pub use commit::{Committed, OutputDir, OutputMode, Rewrite, Rewritten, prepare_output};
pub use file_reader::TableFileReader;
pub use layout::DatasetMarker;
pub use manifest::InputRecord;
pub use partitioning::{PartitionError, PartitionKey, Partitioning};
pub use table::{Table, TableError, TableLocation};
pub use upload_stream::UploadBudget;

/// Errors reading or changing a dataset. Each names the path or table involved.
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
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(
        "{root}: the output is not empty and holds no Delta table; choose a new or empty directory or prefix"
    )]
    NotADataset { root: String },
    #[error(
        "{root}: the Delta table there was not written by keytrail (its properties do not name a keytrail schema); choose a new or empty directory or prefix"
    )]
    NotKeytrail { root: String },
    #[error(
        "{root}: this is a dataset of keytrail 0.1 (`_keytrail/runs`), from before keytrail wrote Delta Lake tables; make it a Delta table in place with `keytrail upgrade {root}`, or convert into a new location"
    )]
    Legacy { root: String },
    #[error(
        "{root}: the table already holds {files} files; pass --incremental to add to it or --overwrite to replace its data"
    )]
    AlreadyADataset { root: String, files: usize },
    #[error(
        "{root}: the table is partitioned by [{}] with schema version {existing_version}; this run would write [{}] with version {wanted_version}: use the same --partition-by, or convert into a new location",
        .existing_partition_by.join(","), .wanted_partition_by.join(",")
    )]
    Mismatch {
        root: String,
        existing_partition_by: Vec<String>,
        existing_version: u32,
        wanted_partition_by: Vec<String>,
        wanted_version: u32,
    },
    #[error(
        "{root}: the table was converted {} --keep-raw (it has {} raw_event column); this run {}: pass the same --keep-raw choice, or --overwrite to change it",
        if *.table_keeps_raw { "with" } else { "without" },
        if *.table_keeps_raw { "the" } else { "no" },
        if *.table_keeps_raw { "does not keep the raw text" } else { "keeps it" }
    )]
    RawColumn { root: String, table_keeps_raw: bool },
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError + '_ {
    move |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One data file of a dataset: its path relative to the root, its rows and bytes, and its
/// statistics for the Delta log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DataFile {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// Delta statistics (`numRecords`, `minValues`, `maxValues`, `nullCount`) as JSON.
    #[serde(skip)]
    pub stats: Option<String>,
}
