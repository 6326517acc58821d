//! The order of every output file, and sorting rows into it: sort keys borrowed from the
//! batches, a key prefix for the common case, whole-row tie-breaks, and the sorted rows gathered
//! in chunks.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, DynComparator, RecordBatch, make_comparator};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::error::ArrowError;

use super::gather;

/// Rows per batch of the sorted output of a sort or merge.
pub(super) const MERGE_BATCH_ROWS: usize = 8192;

/// Rows of several batches in `(event_time, event_id)` order, the order of every output file.
///
/// Only row positions are sorted (by keys borrowed from the batches); rows are then gathered from
/// the original batches in chunks of `chunk_rows`, so sorting never holds a second copy of the
/// partition.
pub(super) struct SortedRows {
    batches: Vec<RecordBatch>,
    columns: KeyColumns,
    order: Vec<(usize, usize)>,
    next: usize,
    pub(super) chunk_rows: usize,
}

impl SortedRows {
    pub(super) fn new(batches: Vec<RecordBatch>, chunk_rows: usize) -> SortedRows {
        // Keys borrow from the batches: concatenating the sort columns for a lexsort copied the
        // large request/response JSON columns (only tie-breakers) on every spill.
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let columns = batches.first().map_or([0; 6], |b| key_columns(&b.schema()));
        let mut keyed: Vec<(KeyPrefix, (usize, usize))> = Vec::with_capacity(rows);
        for (b, batch) in batches.iter().enumerate() {
            let key = |row| key_prefix(&row_key(batch, &columns, row));
            keyed.extend((0..batch.num_rows()).map(|row| (key(row), (b, row))));
        }
        let full_key = |(b, row): (usize, usize)| row_key(&batches[b], &columns, row);
        let mut ties = TieBreaker::default();
        keyed.sort_by(|x, y| {
            x.0.cmp(&y.0)
                .then_with(|| cmp_keys(&full_key(x.1), &full_key(y.1)))
                .then_with(|| ties.cmp(&batches, x.1, y.1))
        });
        let order = keyed.into_iter().map(|(_, at)| at).collect();
        SortedRows {
            batches,
            columns,
            order,
            next: 0,
            chunk_rows,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// The key of the `i`-th row in sorted order.
    fn key(&self, i: usize) -> SortKey<'_> {
        let (b, row) = self.order[i];
        row_key(&self.batches[b], &self.columns, row)
    }

    /// A copy of the `i`-th row in sorted order.
    pub(super) fn row(&self, i: usize) -> Result<RecordBatch, ArrowError> {
        gather::interleave_rows(&self.batches.iter().collect::<Vec<_>>(), &self.order[i..=i])
    }

    /// How many rows are older than `window` before the newest row's time or the watermark,
    /// whichever is older.
    pub(super) fn rows_before_window(&self, window: i64, watermark: Option<i64>) -> usize {
        let Some(last) = self.order.len().checked_sub(1) else {
            return 0;
        };
        let newest = self.key(last).time.min(watermark.unwrap_or(i64::MAX));
        let start = newest.saturating_sub(window);
        self.order.partition_point(|&(b, row)| {
            self.batches[b]
                .column(0)
                .as_primitive::<TimestampMicrosecondType>()
                .value(row)
                < start
        })
    }

    /// The next chunk of sorted rows, stopping at the `end`-th row.
    pub(super) fn next_until(&mut self, end: usize) -> Option<Result<RecordBatch, ArrowError>> {
        let end = end.min(self.order.len()).min(self.next + self.chunk_rows);
        if self.next >= end {
            return None;
        }
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let chunk = gather::interleave_rows(&refs, &self.order[self.next..end]);
        self.next = end;
        Some(chunk)
    }
}

impl Iterator for SortedRows {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_until(self.order.len())
    }
}

/// The order of every output file, nulls last. The first four columns identify an event, so
/// copies of one event sort next to each other (that is how duplicates are found); the rest only
/// break ties, so that which copy is kept never depends on the order inputs were read in.
pub(super) const SORT_COLUMNS: [&str; 7] = [
    "event_time",
    "event_id",
    "recipient_account_id",
    "event_name",
    "error_code",
    "request_parameters",
    "response_elements",
];

/// A row's values of [`SORT_COLUMNS`]: the time, then the text columns.
pub(super) struct SortKey<'a> {
    pub(super) time: i64,
    pub(super) text: [Option<&'a str>; 6],
}

/// Where the text columns of [`SORT_COLUMNS`] are in a batch's schema; looked up once per batch
/// (or per merge), not per row.
pub(super) type KeyColumns = [usize; 6];

pub(super) fn key_columns(schema: &arrow::datatypes::Schema) -> KeyColumns {
    std::array::from_fn(|i| schema.index_of(SORT_COLUMNS[i + 1]).expect("sort columns exist"))
}

pub(super) fn row_key<'b>(batch: &'b RecordBatch, columns: &KeyColumns, row: usize) -> SortKey<'b> {
    let times = batch.column(0).as_primitive::<TimestampMicrosecondType>();
    SortKey {
        time: times.value(row),
        text: std::array::from_fn(|i| text_at(batch, columns[i], row)),
    }
}

/// A text column's value in one row (`None` for null, or for a column that is not text).
pub(super) fn text_at(batch: &RecordBatch, column: usize, row: usize) -> Option<&str> {
    let values = batch.column(column).as_string_opt::<i32>()?;
    (!values.is_null(row)).then(|| values.value(row))
}

/// The start of a [`SortKey`] that orders like it wherever the two differ: the time, then the
/// event id's first 8 bytes (a missing id last). Sorting these (24 bytes) with the rows, rather
/// than the whole keys (104 bytes with six borrowed strings), moves a third of the memory, and
/// the whole keys are read only for the rare rows that tie on both.
type KeyPrefix = (i64, bool, u64);

fn key_prefix(key: &SortKey<'_>) -> KeyPrefix {
    let id = key.text[0].unwrap_or_default().as_bytes();
    let mut first = [0u8; 8];
    let n = id.len().min(8);
    first[..n].copy_from_slice(&id[..n]);
    (key.time, key.text[0].is_none(), u64::from_be_bytes(first))
}

pub(super) fn cmp_keys(a: &SortKey<'_>, b: &SortKey<'_>) -> std::cmp::Ordering {
    fn nulls_last(x: Option<&str>, y: Option<&str>) -> std::cmp::Ordering {
        match (x, y) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    }
    a.time.cmp(&b.time).then_with(|| {
        a.text
            .iter()
            .zip(&b.text)
            .map(|(x, y)| nulls_last(*x, *y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    })
}

/// The first column in which two rows differ, by the comparators of their batches
/// ([`whole_row_comparators`]).
pub(super) fn first_difference(
    comparators: &[DynComparator],
    a_row: usize,
    b_row: usize,
) -> std::cmp::Ordering {
    comparators
        .iter()
        .map(|compare| compare(a_row, b_row))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// The tie-break of the order of every output file: rows equal in all [`SORT_COLUMNS`] are
/// ordered by all their columns, in schema order, so that the order of such rows (and which copy
/// of a duplicated event is kept) follows from the rows alone, never from which worker read them
/// first. The sort, the merge and the late-row check all build these once per pair of batches.
pub(super) fn whole_row_comparators(a: &RecordBatch, b: &RecordBatch) -> Vec<DynComparator> {
    let options = arrow::compute::SortOptions {
        descending: false,
        nulls_first: false,
    };
    a.columns()
        .iter()
        .zip(b.columns())
        // Every type of the schema has an order; a column without one only breaks no ties.
        .filter_map(|(left, right)| make_comparator(left.as_ref(), right.as_ref(), options).ok())
        .collect()
}

/// The whole-row tie-break ([`whole_row_comparators`]) for the rows of one sort, building each pair of
/// batches' comparators once: many rows may tie (a source without event ids), while real events
/// never do.
#[derive(Default)]
struct TieBreaker {
    comparators: HashMap<(usize, usize), Vec<DynComparator>>,
}

impl TieBreaker {
    fn cmp(&mut self, batches: &[RecordBatch], a: (usize, usize), b: (usize, usize)) -> std::cmp::Ordering {
        let comparators = self
            .comparators
            .entry((a.0, b.0))
            .or_insert_with(|| whole_row_comparators(&batches[a.0], &batches[b.0]));
        first_difference(comparators, a.1, b.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_order_like_whole_keys_where_they_differ() {
        let ids = [
            None,
            Some(""),
            Some("\0"),
            Some("a"),
            Some("a\0"),
            Some("a\0b"),
            Some("abcdefgh"),
            Some("abcdefgh-1"),
            Some("abcdefgi"),
            Some("é"),
        ];
        let key = |time: i64, id: Option<&'static str>| SortKey {
            time,
            text: [id, None, None, None, None, None],
        };
        let keys: Vec<SortKey<'_>> = [1, 2]
            .into_iter()
            .flat_map(|time| ids.map(|id| key(time, id)))
            .collect();
        for a in &keys {
            for b in &keys {
                let prefix = key_prefix(a).cmp(&key_prefix(b));
                if prefix.is_ne() {
                    assert_eq!(prefix, cmp_keys(a, b), "{:?} {:?}", a.text[0], b.text[0]);
                }
            }
        }
        assert!(
            key_prefix(&key(1, Some("a"))) < key_prefix(&key(1, None)),
            "missing ids last"
        );
    }
}
