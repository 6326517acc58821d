//! The manifest of converted inputs: what a run records of each input it read to the end, so a
//! later `--incremental` run can tell the inputs it has already converted.

use serde::{Deserialize, Serialize};

/// An input a run converted, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    /// A file's absolute path, or an object's URL.
    pub path: String,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified: Option<i128>,
    /// xxh3-128 of the input's bytes as stored (compressed or not), hex.
    pub hash: String,
}

impl InputRecord {
    /// Whether `current` (an entry made before reading, without a hash) has this record's size
    /// and modification time: an input that kept both is taken as unchanged without reading it.
    pub fn same_metadata(&self, current: &InputRecord) -> bool {
        self.size == current.size && self.modified == current.modified
    }
}
