//! Merging sorted runs (spilled runs, a partition's staged files, rows sorted in memory) into one
//! stream in the order of every output file.
//!
//! As in DataFusion's sort-preserving merge, the runs' current rows sit in a loser tree: taking
//! a row costs log2(runs) comparisons instead of one per run, and the whole-row comparators that
//! break full-key ties are built once per pair of batches, not per tie.

use std::collections::HashMap;

use arrow::array::{DynComparator, RecordBatch};
use arrow::error::ArrowError;

use super::sort::{
    KeyColumns, MERGE_BATCH_ROWS, cmp_keys, first_difference, key_columns, row_key, whole_row_comparators,
};
use super::{WriteError, gather};

/// A sorted stream of batches: a spilled run, a partition's staged files, or rows sorted in memory.
pub type RunReader = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

/// A sorted run being merged: its current batch and position.
struct Cursor {
    batches: RunReader,
    /// `None` once the run is exhausted.
    batch: Option<RecordBatch>,
    row: usize,
    /// Counts the batches loaded, so cached comparators of an older batch are not reused.
    generation: u64,
}

impl Cursor {
    /// Loads the run's next non-empty batch, or marks it exhausted.
    fn advance_batch(&mut self) -> Result<(), ArrowError> {
        self.batch = None;
        self.row = 0;
        self.generation += 1;
        for next in self.batches.by_ref() {
            let next = next?;
            if next.num_rows() > 0 {
                self.batch = Some(next);
                break;
            }
        }
        Ok(())
    }
}

/// Whole-row comparators for the current batches of two cursors.
type CachedComparators = ((u64, u64), Vec<DynComparator>);

/// The runs being merged and the loser tree over them.
struct Merge {
    cursors: Vec<Cursor>,
    columns: KeyColumns,
    /// `tree[0]` is the winner (the run whose row comes next); every other node holds the loser
    /// of the match played there.
    tree: Vec<usize>,
    comparators: HashMap<(usize, usize), CachedComparators>,
}

impl Merge {
    /// Whether run `a`'s current row comes after run `b`'s. Exhausted runs come last; rows equal
    /// in every column are taken in run order.
    fn after(&mut self, a: usize, b: usize) -> bool {
        let (Some(batch_a), Some(batch_b)) = (&self.cursors[a].batch, &self.cursors[b].batch) else {
            return match (&self.cursors[a].batch, &self.cursors[b].batch) {
                (None, None) => a > b,
                (None, Some(_)) => true,
                _ => false,
            };
        };
        let (row_a, row_b) = (self.cursors[a].row, self.cursors[b].row);
        let order = cmp_keys(
            &row_key(batch_a, &self.columns, row_a),
            &row_key(batch_b, &self.columns, row_b),
        )
        .then_with(|| {
            let generations = (self.cursors[a].generation, self.cursors[b].generation);
            let cached = self
                .comparators
                .entry((a, b))
                .or_insert_with(|| (generations, Vec::new()));
            if cached.0 != generations || cached.1.is_empty() {
                *cached = (generations, whole_row_comparators(batch_a, batch_b));
            }
            first_difference(&cached.1, row_a, row_b)
        });
        order.then(a.cmp(&b)).is_gt()
    }

    /// Builds the tree by playing every run's first row up from its leaf.
    fn build(&mut self) {
        let runs = self.cursors.len();
        self.tree = vec![usize::MAX; runs];
        for run in 0..runs {
            let mut winner = run;
            let mut node = (runs + run) / 2;
            while node != 0 && self.tree[node] != usize::MAX {
                let challenger = self.tree[node];
                if self.after(winner, challenger) {
                    self.tree[node] = winner;
                    winner = challenger;
                }
                node /= 2;
            }
            self.tree[node] = winner;
        }
    }

    /// Replays the matches on the winner's path after its run moved to its next row.
    fn replay(&mut self) {
        let runs = self.cursors.len();
        let mut winner = self.tree[0];
        let mut node = (runs + winner) / 2;
        while node != 0 {
            let challenger = self.tree[node];
            if self.after(winner, challenger) {
                self.tree[node] = winner;
                winner = challenger;
            }
            node /= 2;
        }
        self.tree[0] = winner;
    }
}

/// k-way merge of sorted runs into the sink, in `MERGE_BATCH_ROWS` chunks.
pub(super) fn merge_runs(
    runs: Vec<RunReader>,
    partition: &str,
    sink: &mut dyn FnMut(&RecordBatch) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    let arrow_error = |source| WriteError::arrow(partition, "merging sorted runs", source);
    let mut cursors = Vec::with_capacity(runs.len());
    for batches in runs {
        let mut cursor = Cursor {
            batches,
            batch: None,
            row: 0,
            generation: 0,
        };
        cursor.advance_batch().map_err(arrow_error)?;
        if cursor.batch.is_some() {
            cursors.push(cursor);
        }
    }
    let Some(first) = cursors.first().and_then(|c| c.batch.as_ref()) else {
        return Ok(());
    };
    let mut merge = Merge {
        columns: key_columns(&first.schema()),
        cursors,
        tree: Vec::new(),
        comparators: HashMap::new(),
    };
    merge.build();
    // The rows of a chunk are gathered from the batches they are in: every cursor's current one,
    // and those loaded while the chunk filled (`slot` says where each cursor's is).
    let mut chunk_batches: Vec<RecordBatch> = merge.cursors.iter().filter_map(|c| c.batch.clone()).collect();
    let mut slot: Vec<usize> = (0..merge.cursors.len()).collect();
    let mut indices: Vec<(usize, usize)> = Vec::with_capacity(MERGE_BATCH_ROWS);
    loop {
        let winner = merge.tree[0];
        let cursor = &mut merge.cursors[winner];
        let Some(batch) = &cursor.batch else { break };
        indices.push((slot[winner], cursor.row));
        cursor.row += 1;
        if cursor.row == batch.num_rows() {
            cursor.advance_batch().map_err(arrow_error)?;
            if let Some(batch) = &cursor.batch {
                chunk_batches.push(batch.clone());
                slot[winner] = chunk_batches.len() - 1;
            }
        }
        merge.replay();
        if indices.len() == MERGE_BATCH_ROWS {
            let refs: Vec<&RecordBatch> = chunk_batches.iter().collect();
            sink(&gather::interleave_rows(&refs, &indices).map_err(arrow_error)?)?;
            indices.clear();
            chunk_batches.clear();
            for (run, cursor) in merge.cursors.iter().enumerate() {
                if let Some(batch) = &cursor.batch {
                    chunk_batches.push(batch.clone());
                    slot[run] = chunk_batches.len() - 1;
                }
            }
        }
    }
    if !indices.is_empty() {
        let refs: Vec<&RecordBatch> = chunk_batches.iter().collect();
        sink(&gather::interleave_rows(&refs, &indices).map_err(arrow_error)?)?;
    }
    Ok(())
}
