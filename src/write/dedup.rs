//! Dropping copies of events: rows whose identity was already written earlier in the partition
//! (adjacent, thanks to the sort order) or, incrementally, by an earlier run.

use std::fs::File;
use std::path::PathBuf;

use arrow::array::RecordBatch;

use super::WriteError;
use super::sort::{SORT_COLUMNS, SortKey, key_columns, row_key};

/// An event's identity: `(event_time, event_id, recipient_account_id, event_name)`. CloudTrail's
/// duplicates are re-deliveries of one event, so they agree on all four; requiring time and name
/// as well as the id keeps hand-written examples that reuse an id apart.
type Identity = (i64, String, Option<String>, Option<String>);

/// The identity of a row, borrowed from its batch.
type IdentityRef<'a> = (i64, &'a str, Option<&'a str>, Option<&'a str>);

fn identity_ref(key: SortKey<'_>) -> Option<IdentityRef<'_>> {
    let [id, account, name, ..] = key.text;
    Some((key.time, id?, account, name))
}

fn owned(identity: IdentityRef<'_>) -> Identity {
    let (time, id, account, name) = identity;
    (
        time,
        id.to_string(),
        account.map(str::to_string),
        name.map(str::to_string),
    )
}

fn same(owned: &Identity, borrowed: &IdentityRef<'_>) -> bool {
    owned.0 == borrowed.0
        && owned.1 == borrowed.1
        && owned.2.as_deref() == borrowed.2
        && owned.3.as_deref() == borrowed.3
}

/// Drops rows whose identity was already written: earlier in this partition (adjacent, thanks to
/// the sort order) or, incrementally, by an earlier run.
#[derive(Default)]
pub(super) struct Dedup {
    previous: Option<Identity>,
    /// Identities in the partition's committed files, loaded when first needed.
    committed: Option<std::collections::HashSet<Identity>>,
    /// Rows dropped so far.
    pub(super) dropped: u64,
}

impl Dedup {
    /// Reads the identities of a partition's committed files (incremental runs), once.
    pub(super) fn load_committed(&mut self, existing_files: &[PathBuf]) -> Result<(), WriteError> {
        if self.committed.is_some() {
            return Ok(());
        }
        let mut committed = std::collections::HashSet::new();
        for path in existing_files {
            let file = File::open(path).map_err(|source| WriteError::Io {
                path: path.clone(),
                source,
            })?;
            let parquet_error = |source| WriteError::Parquet {
                path: path.clone(),
                source,
            };
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(parquet_error)?;
            let wanted: Vec<usize> = SORT_COLUMNS
                .iter()
                .filter_map(|name| builder.schema().index_of(name).ok())
                .collect();
            let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), wanted);
            for batch in builder.with_projection(mask).build().map_err(parquet_error)? {
                let batch = batch.map_err(|source| WriteError::Parquet {
                    path: path.clone(),
                    source: source.into(),
                })?;
                let columns = key_columns(&batch.schema());
                committed.extend(
                    (0..batch.num_rows())
                        .filter_map(|row| identity_ref(row_key(&batch, &columns, row)).map(owned)),
                );
            }
        }
        self.committed = Some(committed);
        Ok(())
    }

    /// Frees the committed identities (reloaded if the partition gets rows again).
    pub(super) fn unload_committed(&mut self) {
        self.committed = None;
    }

    pub(super) fn filter(&mut self, batch: &RecordBatch, partition: &str) -> Result<RecordBatch, WriteError> {
        let columns = key_columns(&batch.schema());
        let mut keep = Vec::with_capacity(batch.num_rows());
        // Identities are compared where they lie in the batch; only the last one is copied, to
        // compare the next batch's first row with.
        let mut previous: Option<IdentityRef<'_>> = None;
        for row in 0..batch.num_rows() {
            let Some(current) = identity_ref(row_key(batch, &columns, row)) else {
                keep.push(true);
                continue;
            };
            let repeated = match &previous {
                Some(previous) => *previous == current,
                None => self.previous.as_ref().is_some_and(|p| same(p, &current)),
            };
            let duplicate = repeated
                || self
                    .committed
                    .as_ref()
                    .is_some_and(|c| !c.is_empty() && c.contains(&owned(current)));
            previous = Some(current);
            keep.push(!duplicate);
            self.dropped += u64::from(duplicate);
        }
        if let Some(last) = previous {
            self.previous = Some(owned(last));
        }
        if keep.iter().all(|k| *k) {
            return Ok(batch.clone());
        }
        arrow::compute::filter_record_batch(batch, &arrow::array::BooleanArray::from(keep))
            .map_err(|source| WriteError::arrow(partition, "dropping duplicates", source))
    }
}
