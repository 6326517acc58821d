//! Dropping copies of events: rows that are the same event as one already written earlier in
//! the partition (adjacent, thanks to the sort order) or, incrementally, by an earlier run.

use std::collections::HashSet;
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use xxhash_rust::xxh3::Xxh3;

use super::WriteError;
use super::sort::{KeyColumns, SORT_COLUMNS, key_columns, row_key, text_at};
use crate::dataset::TableFileReader;

/// The column whose account stands in for a missing `recipient_account_id`.
const CALLER_ACCOUNT_COLUMN: &str = "user_identity_account_id";

/// An event's identity: `(event_time, event_id, account, event_name, content)`.
///
/// CloudTrail's duplicates are re-deliveries of one event, so they agree on all of it; requiring
/// time and name as well as the id keeps hand-written examples that reuse an id apart. `account`
/// is `recipient_account_id`, or the caller's account (`userIdentity.accountId`) where an export
/// dropped the recipient. `content` is a fingerprint: of the error code, request parameters and
/// response elements when the account is known (two records of one id that differ there — a
/// failed and a successful Decrypt in the KMS guide's examples — are two events, and which copy
/// of one event is kept no longer depends on the order inputs were read in), of every text
/// column where it is not (two principals' console sign-ins in a peer's test data share id,
/// time and name: only identical copies are the same event).
type Identity = (i64, String, Option<String>, Option<String>, u128);

/// The identity of a row, borrowed from its batch.
type IdentityRef<'a> = (i64, &'a str, Option<&'a str>, Option<&'a str>, u128);

/// Where a batch's identity columns are.
struct IdentityColumns {
    key: KeyColumns,
    caller_account: Option<usize>,
    /// Every text column, in schema order: the content fingerprint's input.
    text: Vec<usize>,
}

impl IdentityColumns {
    fn new(schema: &arrow::datatypes::Schema) -> IdentityColumns {
        IdentityColumns {
            key: key_columns(schema),
            caller_account: schema.index_of(CALLER_ACCOUNT_COLUMN).ok(),
            // The original text is not content: two copies of one event may be formatted apart.
            text: (schema.fields().iter().enumerate())
                .filter(|(_, field)| {
                    field.data_type() == &DataType::Utf8 && field.name() != crate::schema::RAW_EVENT_COLUMN
                })
                .map(|(i, _)| i)
                .collect(),
        }
    }
}

/// The row's identity; `None` for a row without an event id (never taken for a copy).
fn identity_ref<'b>(
    batch: &'b RecordBatch,
    columns: &IdentityColumns,
    row: usize,
) -> Option<IdentityRef<'b>> {
    let key = row_key(batch, &columns.key, row);
    let [id, recipient, name, error, request, response] = key.text;
    let account = recipient.or_else(|| columns.caller_account.and_then(|c| text_at(batch, c, row)));
    let content = match account {
        Some(_) => fingerprint([error, request, response].into_iter()),
        None => fingerprint(columns.text.iter().map(|&c| text_at(batch, c, row))),
    };
    Some((key.time, id?, account, name, content))
}

/// xxh3-128 of texts (each as absent, or its length and bytes).
fn fingerprint<'a>(texts: impl Iterator<Item = Option<&'a str>>) -> u128 {
    let mut hasher = Xxh3::new();
    add_texts(&mut hasher, texts);
    hasher.digest128()
}

fn add_texts<'a>(hasher: &mut Xxh3, texts: impl Iterator<Item = Option<&'a str>>) {
    for text in texts {
        match text {
            None => hasher.update(&[0]),
            Some(text) => {
                hasher.update(&[1]);
                hasher.update(&(text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
        }
    }
}

/// The column that keeps two events apart in a conversion's default partitioning (they land in
/// two partitions, each with its own dedup).
const REGION_COLUMN: &str = "aws_region";

/// Every column [`identity_digests`] reads: a scan that builds only some columns builds these.
#[cfg(feature = "sql")]
pub(crate) fn identity_column_names() -> impl Iterator<Item = &'static str> {
    SORT_COLUMNS
        .into_iter()
        .chain([CALLER_ACCOUNT_COLUMN, REGION_COLUMN])
}

/// Each row's identity as one xxh3-128 digest, for dropping copies across a whole query over raw
/// logs, whose rows are in no order: `None` for a row without an event id (never a copy). The
/// Region is part of it, as in a conversion partitioned by Region, which never compares events
/// of two Regions.
pub(crate) fn identity_digests(batch: &RecordBatch) -> Vec<Option<u128>> {
    use arrow::array::{Array, AsArray};

    let columns = IdentityColumns::new(&batch.schema());
    let region = batch.schema().index_of(REGION_COLUMN).ok();
    // A scan that builds only some columns gives each row its original text's digest: what
    // tells two events of no account apart where the unbuilt columns would.
    let originals = batch
        .column_by_name(crate::flatten::ORIGINAL_DIGEST_COLUMN)
        .and_then(|c| c.as_fixed_size_binary_opt().cloned());
    (0..batch.num_rows())
        .map(|row| {
            let key = row_key(batch, &columns.key, row);
            let [id, recipient, name, error, request, response] = key.text;
            let id = id?;
            let account = recipient.or_else(|| columns.caller_account.and_then(|c| text_at(batch, c, row)));
            let content = match (account, &originals) {
                (Some(_), _) => fingerprint([error, request, response].into_iter()),
                (None, Some(originals)) if originals.is_valid(row) => {
                    u128::from_le_bytes(originals.value(row).try_into().unwrap_or_default())
                }
                (None, _) => fingerprint(columns.text.iter().map(|&c| text_at(batch, c, row))),
            };
            let time = key.time;
            let mut hasher = Xxh3::new();
            hasher.update(&time.to_le_bytes());
            let region = region.and_then(|c| text_at(batch, c, row));
            add_texts(&mut hasher, [Some(id), account, name, region].into_iter());
            hasher.update(&content.to_le_bytes());
            Some(hasher.digest128())
        })
        .collect()
}

/// The events a scan in no particular order has read, by identity digest (16 bytes each), shared
/// by the threads of the scan: each event passes once, whichever thread reads it first.
#[derive(Debug, Default)]
pub struct SeenEvents {
    digests: std::sync::Mutex<HashSet<u128>>,
}

impl SeenEvents {
    /// `batch` without the events seen before (by any scan sharing this set), and how many
    /// copies were dropped. Rows without an event id are never copies.
    pub fn drop_copies(&self, batch: RecordBatch) -> Result<(RecordBatch, usize), arrow::error::ArrowError> {
        let digests = identity_digests(&batch);
        let keep: arrow::array::BooleanArray = {
            let mut seen = crate::sync::lock(&self.digests);
            digests
                .iter()
                .map(|digest| Some(digest.is_none_or(|d| seen.insert(d))))
                .collect()
        };
        let dropped = keep.false_count();
        if dropped == 0 {
            return Ok((batch, 0));
        }
        Ok((arrow::compute::filter_record_batch(&batch, &keep)?, dropped))
    }
}

fn owned(identity: IdentityRef<'_>) -> Identity {
    let (time, id, account, name, content) = identity;
    (
        time,
        id.to_string(),
        account.map(str::to_string),
        name.map(str::to_string),
        content,
    )
}

fn same(owned: &Identity, borrowed: &IdentityRef<'_>) -> bool {
    owned.0 == borrowed.0
        && owned.1 == borrowed.1
        && owned.2.as_deref() == borrowed.2
        && owned.3.as_deref() == borrowed.3
        && owned.4 == borrowed.4
}

/// Drops rows that are the same event as one already written: earlier in this partition
/// (adjacent, thanks to the sort order) or, incrementally, by an earlier run.
#[derive(Default)]
pub(super) struct Dedup {
    previous: Option<Identity>,
    /// Identities in the partition's committed files, loaded when first needed.
    committed: Option<HashSet<Identity>>,
    /// Rows dropped so far.
    pub(super) dropped: u64,
}

impl Dedup {
    /// Reads the identities of a partition's committed files (incremental runs), once.
    pub(super) fn load_committed(&mut self, existing_files: &[TableFileReader]) -> Result<(), WriteError> {
        if self.committed.is_some() {
            return Ok(());
        }
        let mut committed = HashSet::new();
        for file in existing_files {
            // The identity columns are enough for most rows; a file with rows whose account is
            // unknown is read again whole, for their content fingerprints.
            let with_accounts = |identity: &IdentityRef<'_>| identity.2.is_some();
            let mut without_account = false;
            read_identities(file, true, &mut |identity| {
                without_account |= !with_accounts(&identity);
                if with_accounts(&identity) {
                    committed.insert(owned(identity));
                }
            })?;
            if without_account {
                read_identities(file, false, &mut |identity| {
                    if !with_accounts(&identity) {
                        committed.insert(owned(identity));
                    }
                })?;
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
        let columns = IdentityColumns::new(&batch.schema());
        let mut keep = Vec::with_capacity(batch.num_rows());
        // Identities are compared where they lie in the batch; only the last one is copied, to
        // compare the next batch's first row with.
        let mut previous: Option<IdentityRef<'_>> = None;
        for row in 0..batch.num_rows() {
            let Some(current) = identity_ref(batch, &columns, row) else {
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

/// Calls `each` with the identity of every row of a committed Parquet file; with `projected`,
/// only the identity columns are read (content fingerprints are then not the real ones, so
/// callers use those rows' identities only where the account is known).
fn read_identities(
    file: &TableFileReader,
    projected: bool,
    each: &mut dyn FnMut(IdentityRef<'_>),
) -> Result<(), WriteError> {
    let parquet_error = |source| WriteError::Parquet {
        path: PathBuf::from(file.name()),
        source,
    };
    let wanted: Vec<&str> = SORT_COLUMNS
        .iter()
        .chain([&CALLER_ACCOUNT_COLUMN])
        .copied()
        .collect();
    let batches = file
        .batches(projected.then_some(wanted.as_slice()))
        .map_err(parquet_error)?;
    for batch in batches {
        let batch = batch.map_err(parquet_error)?;
        let columns = IdentityColumns::new(&batch.schema());
        for row in 0..batch.num_rows() {
            if let Some(identity) = identity_ref(&batch, &columns, row) {
                each(identity);
            }
        }
    }
    Ok(())
}
