//! SQL straight over raw CloudTrail input: the `events` table of files, directories, globs or
//! `s3://` prefixes that hold CloudTrail JSON (no converted table there), flattened on the fly.
//!
//! [`RawEvents`] has the schema of a converted table (the same columns, docs and types, with the
//! default partition columns `region` and `event_date` derived from each row). Each query lists
//! the inputs again, skipping what its filters rule out by the delivery layout
//! ([`filters`], [`crate::read::layout`]), and reads the rest in parallel ([`exec`]). What a query
//! read — inputs, events, copies dropped, invalid records named with their file and record — is
//! kept in a [`ScanLedger`] per query, for the caller to report ([`RawEvents::take_summary`]).

mod exec;
pub mod filters;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema as ArrowSchema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr;

use crate::convert::DEFAULT_BATCH_ROWS;
use crate::convert::scan::{ScanLedger, ScanSummary};
use crate::dataset::Partitioning;
use crate::read::{Input, discover_filtered, sort_by_delivery_time};
use crate::schema::Schema;
use crate::store::Stores;
use crate::sync::lock;

/// The default `--delivery-margin`: how long after an event the file holding it may have been
/// delivered. The real delivery files measured deliver within 10 minutes (AWS: "typically
/// within an average of about 5 minutes", not guaranteed); an hour keeps late files in.
pub const DEFAULT_DELIVERY_MARGIN: Duration = Duration::from_secs(3600);

/// How a raw table reads its inputs.
#[derive(Debug, Clone)]
pub struct RawOptions {
    /// Fail a query at the first problem with an input or record (else report them after it).
    pub strict: bool,
    /// How long after an event its file may have been delivered; `None` never skips files by
    /// their delivery time (only by account and Region).
    pub delivery_margin: Option<Duration>,
    /// Add the column [`crate::schema::RAW_EVENT_COLUMN`] (each event's original text).
    pub keep_raw: bool,
}

impl Default for RawOptions {
    fn default() -> RawOptions {
        RawOptions {
            strict: false,
            delivery_margin: Some(DEFAULT_DELIVERY_MARGIN),
            keep_raw: false,
        }
    }
}

/// The `events` table over raw inputs (see the module docs).
pub struct RawEvents {
    inputs: Vec<String>,
    stores: Arc<Stores>,
    schema: SchemaRef,
    options: RawOptions,
    /// The ledgers of the queries planned since the last [`RawEvents::take_summary`].
    ledgers: Mutex<Vec<Arc<ScanLedger>>>,
}

impl std::fmt::Debug for RawEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEvents").field("inputs", &self.inputs).finish()
    }
}

impl RawEvents {
    /// A table over `inputs` (as `keytrail convert` takes them), listed through `stores`.
    pub fn new(inputs: Vec<String>, stores: Arc<Stores>, options: RawOptions) -> RawEvents {
        RawEvents {
            inputs,
            stores,
            schema: table_schema(options.keep_raw),
            options,
            ledgers: Mutex::new(Vec::new()),
        }
    }

    /// What the queries planned since the last call read, added up; `None` if none read.
    pub fn take_summary(&self) -> Option<ScanSummary> {
        let ledgers = std::mem::take(&mut *lock(&self.ledgers));
        let mut summaries = ledgers.iter().map(|l| l.summary());
        let mut total = summaries.next()?;
        for summary in summaries {
            total.merge(summary);
        }
        Some(total)
    }
}

/// A converted table's schema as the session reads it: the flattened columns (and the original
/// text, if kept) with text as views, then the default partition columns.
fn table_schema(keep_raw: bool) -> SchemaRef {
    let flattened = super::string_views::with_views(&Schema::builtin().table_arrow_schema(keep_raw));
    let mut fields: Vec<Field> = flattened.fields().iter().map(|f| f.as_ref().clone()).collect();
    let dictionary = DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8));
    for column in Partitioning::default().column_names() {
        fields.push(Field::new(column, dictionary.clone(), true));
    }
    Arc::new(ArrowSchema::new_with_metadata(
        fields,
        flattened.metadata().clone(),
    ))
}

/// Splits inputs (in delivery order) into `count` runs of about equal bytes, each kept in order.
fn split_by_size(inputs: Vec<Input>, count: usize) -> Vec<Vec<Input>> {
    let count = count.clamp(1, inputs.len().max(1));
    let sizes: Vec<u64> = inputs.iter().map(|i| i.size().unwrap_or(0).max(1)).collect();
    let total: u64 = sizes.iter().sum();
    let mut groups: Vec<Vec<Input>> = (0..count).map(|_| Vec::new()).collect();
    let mut done = 0u64;
    for (input, size) in inputs.into_iter().zip(sizes) {
        // A file goes to the run its middle byte falls in.
        let middle = done + size / 2;
        let group = usize::try_from((middle * count as u64) / total.max(1)).unwrap_or(0);
        groups[group.min(count - 1)].push(input);
        done += size;
    }
    groups.retain(|g| !g.is_empty());
    groups
}

#[async_trait::async_trait]
impl TableProvider for RawEvents {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Every filter may skip files by the layout, and is applied to the rows as well.
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let filter = filters::delivery_filter(filters, self.options.delivery_margin);
        let inputs = self.inputs.clone();
        let stores = self.stores.clone();
        let discovery =
            tokio::task::spawn_blocking(move || discover_filtered(&inputs, Some(&stores), Some(&filter)))
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let pruned = discovery.pruned_files + discovery.pruned_dirs;
        if discovery.inputs.is_empty() && pruned == 0 {
            let why: Vec<String> = discovery.problems.iter().map(ToString::to_string).collect();
            return Err(DataFusionError::Execution(if why.is_empty() {
                format!("{}: no input files", self.inputs.join(", "))
            } else {
                why.join("; ")
            }));
        }
        let mut inputs = discovery.inputs;
        sort_by_delivery_time(&mut inputs);
        let ledger = Arc::new(ScanLedger::new(self.options.strict));
        lock(&self.ledgers).push(ledger.clone());
        let plan = exec::ScanPlan {
            groups: split_by_size(inputs, state.config().target_partitions()),
            table_schema: self.schema.clone(),
            projection: projection.cloned(),
            limit,
            batch_rows: DEFAULT_BATCH_ROWS,
            keep_raw: self.options.keep_raw,
            ledger,
            pruned_files: discovery.pruned_files,
            pruned_dirs: discovery.pruned_dirs,
        };
        Ok(Arc::new(exec::RawEventsExec::new(plan)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn inputs_split_into_ordered_runs_of_about_equal_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let inputs: Vec<Input> = [10usize, 10, 10, 10, 40, 5, 5, 10]
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let path: PathBuf = dir.path().join(format!("{i}.json"));
                std::fs::write(&path, vec![b' '; *size]).unwrap();
                Input::File(path)
            })
            .collect();
        let groups = split_by_size(inputs.clone(), 2);
        let sizes: Vec<u64> = groups
            .iter()
            .map(|g| g.iter().map(|i| i.size().unwrap()).sum())
            .collect();
        assert_eq!(sizes, [40, 60]);
        assert_eq!(groups.concat(), inputs, "order kept");
        assert_eq!(split_by_size(inputs[..1].to_vec(), 8).len(), 1);
        assert!(split_by_size(Vec::new(), 2).is_empty());
    }

    #[test]
    fn the_schema_is_a_converted_tables() {
        let schema = table_schema(false);
        let flattened = Schema::builtin().arrow_schema();
        assert_eq!(schema.fields().len(), flattened.fields().len() + 2);
        assert_eq!(schema.field(0), flattened.field(0));
        assert!(matches!(
            schema.field_with_name("event_date").unwrap().data_type(),
            DataType::Dictionary(_, _)
        ));
    }
}
