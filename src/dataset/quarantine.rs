//! The quarantine: records that could not be converted, kept byte for byte with the reason.
//!
//! A run's quarantine is committed to `_keytrail/quarantine/<run>/`:
//! `records.bin` holds the original bytes of each record back to back, and `reasons.jsonl` has one
//! line per record: the input, the record index and byte offset inside it, the reason, and where
//! its bytes are in `records.bin` (`bin_offset`, `length`).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DatasetError, io_error};

/// The `records.bin` file name.
pub const RECORDS_FILE: &str = "records.bin";
/// The `reasons.jsonl` file name.
pub const REASONS_FILE: &str = "reasons.jsonl";

/// One line of `reasons.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuarantineEntry {
    pub input: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub record: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub offset: Option<u64>,
    pub reason: String,
    pub bin_offset: u64,
    pub length: u64,
}

/// Appends quarantined records; files are created on the first record.
#[derive(Debug)]
pub struct Quarantine {
    /// `None`: the records are counted, not kept (a query over raw logs has nowhere to keep
    /// them; its summary names each one).
    dir: Option<PathBuf>,
    /// Records kept in memory instead of files (a Python reader hands them to its caller).
    kept: Option<Vec<(QuarantineEntry, Vec<u8>)>>,
    files: Option<(BufWriter<File>, BufWriter<File>)>,
    bin_offset: u64,
    count: u64,
}

impl Quarantine {
    pub fn new(dir: &Path) -> Quarantine {
        Quarantine {
            dir: Some(dir.to_path_buf()),
            kept: None,
            files: None,
            bin_offset: 0,
            count: 0,
        }
    }

    /// A quarantine that counts records without keeping their bytes.
    pub fn counting() -> Quarantine {
        Quarantine {
            dir: None,
            kept: None,
            files: None,
            bin_offset: 0,
            count: 0,
        }
    }

    /// A quarantine that keeps each record and its entry in memory, for
    /// [`Quarantine::take_kept`].
    pub fn in_memory() -> Quarantine {
        Quarantine {
            kept: Some(Vec::new()),
            ..Quarantine::counting()
        }
    }

    /// The records kept in memory so far (see [`Quarantine::in_memory`]), taken: each entry's
    /// `bin_offset` counts from the first record ever kept.
    pub fn take_kept(&mut self) -> Vec<(QuarantineEntry, Vec<u8>)> {
        self.kept.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Records quarantined so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Keeps `bytes` (the record exactly as read) with where it came from and why.
    pub fn add(
        &mut self,
        input: &str,
        record: Option<u64>,
        offset: Option<u64>,
        reason: &str,
        bytes: &[u8],
    ) -> Result<(), DatasetError> {
        let entry = QuarantineEntry {
            input: input.to_string(),
            record,
            offset,
            reason: reason.to_string(),
            bin_offset: self.bin_offset,
            length: bytes.len() as u64,
        };
        let Some(dir) = &self.dir else {
            if let Some(kept) = &mut self.kept {
                kept.push((entry, bytes.to_vec()));
                self.bin_offset += bytes.len() as u64;
            }
            self.count += 1;
            return Ok(());
        };
        if self.files.is_none() {
            fs::create_dir_all(dir).map_err(io_error(dir))?;
            let open = |name: &str| -> Result<BufWriter<File>, DatasetError> {
                let path = dir.join(name);
                Ok(BufWriter::new(File::create(&path).map_err(io_error(&path))?))
            };
            self.files = Some((open(RECORDS_FILE)?, open(REASONS_FILE)?));
        }
        let (bin, reasons) = self.files.as_mut().expect("opened above");
        bin.write_all(bytes).map_err(io_error(&dir.join(RECORDS_FILE)))?;
        let mut line = serde_json::to_vec(&entry).map_err(|source| DatasetError::Json {
            path: dir.join(REASONS_FILE),
            what: "quarantine entry",
            source,
        })?;
        line.push(b'\n');
        reasons
            .write_all(&line)
            .map_err(io_error(&dir.join(REASONS_FILE)))?;
        self.bin_offset += bytes.len() as u64;
        self.count += 1;
        Ok(())
    }

    /// Flushes and syncs the files.
    pub fn finish(self) -> Result<u64, DatasetError> {
        if let (Some((bin, reasons)), Some(dir)) = (self.files, &self.dir) {
            for (writer, name) in [(bin, RECORDS_FILE), (reasons, REASONS_FILE)] {
                let path = dir.join(name);
                let file = writer.into_inner().map_err(|e| DatasetError::Io {
                    path: path.clone(),
                    source: e.into_error(),
                })?;
                file.sync_all().map_err(io_error(&path))?;
            }
        }
        Ok(self.count)
    }
}

/// Reads a committed quarantine back: each entry with its original bytes.
pub fn read_quarantine(dir: &Path) -> Result<Vec<(QuarantineEntry, Vec<u8>)>, DatasetError> {
    let reasons_path = dir.join(REASONS_FILE);
    let records_path = dir.join(RECORDS_FILE);
    let reasons = fs::read_to_string(&reasons_path).map_err(io_error(&reasons_path))?;
    let records = fs::read(&records_path).map_err(io_error(&records_path))?;
    reasons
        .lines()
        .map(|line| {
            let entry: QuarantineEntry = serde_json::from_str(line).map_err(|source| DatasetError::Json {
                path: reasons_path.clone(),
                what: "quarantine entry",
                source,
            })?;
            let start = entry.bin_offset as usize;
            let bytes = records
                .get(start..start + entry.length as usize)
                .ok_or_else(|| DatasetError::Corrupt {
                    path: records_path.clone(),
                    problem: "a reasons.jsonl entry points past the end of records.bin",
                })?
                .to_vec();
            Ok((entry, bytes))
        })
        .collect()
}
