//! The scan of raw CloudTrail inputs as a DataFusion plan: each output partition is a group of
//! inputs read, flattened and deduplicated on a thread of its own, streaming its batches.
//!
//! Copies of an event are dropped across all partitions of the scan (one shared set of identity
//! digests, 16 bytes per event read), so a query sees each event once, as a converted table
//! holds it.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};
use tokio::sync::mpsc;

use crate::convert::ConvertError;
use crate::convert::scan::{ScanLedger, ScanTarget};
use crate::dataset::Partitioning as TablePartitioning;
use crate::flatten::Flattener;
use crate::read::Input;
use crate::write::dedup::{SeenEvents, identity_column_names};
use crate::write::route::partition_columns;

/// Batches waiting between a partition's thread and the query.
const CHANNEL_BATCHES: usize = 2;

/// What the scan was planned with.
pub(super) struct ScanPlan {
    /// Input groups, one per output partition, each in delivery order.
    pub(super) groups: Vec<Vec<Input>>,
    /// The table's whole schema and the projected columns' indexes into it.
    pub(super) table_schema: SchemaRef,
    pub(super) projection: Option<Vec<usize>>,
    pub(super) limit: Option<usize>,
    pub(super) batch_rows: usize,
    /// Keep each event's original text (the flattener's last column).
    pub(super) keep_raw: bool,
    pub(super) ledger: Arc<ScanLedger>,
    /// Files and directories the delivery layout ruled out while planning.
    pub(super) pruned_files: u64,
    pub(super) pruned_dirs: u64,
}

impl ScanPlan {
    /// Columns of the table's schema that come from the flattener (the rest are derived).
    fn flattened_count(&self) -> usize {
        self.table_schema.fields().len() - TablePartitioning::default().keys().len()
    }

    /// The schema columns the flattener builds: the projected ones and the copy check's identity
    /// columns, which hold what the partition values come from too (the original text, when
    /// kept, is the flattener's own).
    fn flattened_columns(&self) -> Vec<usize> {
        let schema = crate::schema::Schema::builtin();
        let all: Vec<usize> = (0..self.flattened_count()).collect();
        let projected = self.projection.as_deref().unwrap_or(&all);
        let mut columns: Vec<usize> = projected
            .iter()
            .copied()
            .filter(|&i| i < schema.columns().len())
            .chain(identity_column_names().filter_map(|name| schema.index_of(name)))
            .collect();
        columns.sort_unstable();
        columns.dedup();
        columns
    }
}

/// The plan node (see the module docs).
pub(super) struct RawEventsExec {
    plan: Arc<ScanPlan>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    seen: Arc<SeenEvents>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for RawEventsExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawEventsExec")
            .field("inputs", &self.inputs())
            .field("partitions", &self.plan.groups.len())
            .finish()
    }
}

impl RawEventsExec {
    pub(super) fn new(plan: ScanPlan) -> Result<RawEventsExec> {
        let schema = match &plan.projection {
            Some(projection) => Arc::new(plan.table_schema.project(projection)?),
            None => plan.table_schema.clone(),
        };
        let partitions = plan.groups.len().max(1);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        let metrics = ExecutionPlanMetricsSet::new();
        MetricBuilder::new(&metrics)
            .global_counter("files_pruned")
            .add(plan.pruned_files as usize);
        MetricBuilder::new(&metrics)
            .global_counter("dirs_pruned")
            .add(plan.pruned_dirs as usize);
        Ok(RawEventsExec {
            plan: Arc::new(plan),
            schema,
            properties: Arc::new(properties),
            seen: Arc::new(SeenEvents::default()),
            metrics,
        })
    }

    fn inputs(&self) -> usize {
        self.plan.groups.iter().map(Vec::len).sum()
    }
}

impl DisplayAs for RawEventsExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RawEventsExec: inputs={}, pruned_files={}, pruned_dirs={}, partitions={}",
            self.inputs(),
            self.plan.pruned_files,
            self.plan.pruned_dirs,
            self.plan.groups.len().max(1)
        )?;
        if let Some(limit) = self.plan.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for RawEventsExec {
    fn name(&self) -> &'static str {
        "RawEventsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    /// A plan run again (a recursive query) reads every event again: it forgets what it saw.
    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(RawEventsExec {
            plan: self.plan.clone(),
            schema: self.schema.clone(),
            properties: self.properties.clone(),
            seen: Arc::new(SeenEvents::default()),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let group = self.plan.groups.get(partition).cloned().unwrap_or_default();
        let (sender, mut receiver) = mpsc::channel::<Result<RecordBatch>>(CHANNEL_BATCHES);
        let scanner = PartitionScan {
            group: group.into_iter(),
            plan: self.plan.clone(),
            output_schema: self.schema.clone(),
            seen: self.seen.clone(),
            sender,
            rows_left: self.plan.limit,
            files_opened: MetricBuilder::new(&self.metrics).counter("files_opened", partition),
            bytes_scanned: MetricBuilder::new(&self.metrics).counter("bytes_scanned", partition),
            events_read: MetricBuilder::new(&self.metrics).counter("events_read", partition),
            duplicates_dropped: MetricBuilder::new(&self.metrics).counter("duplicates_dropped", partition),
        };
        std::thread::Builder::new()
            .name(format!("keytrail-scan-{partition}"))
            .spawn(move || scanner.run())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// One partition's thread.
struct PartitionScan {
    /// The partition's inputs not yet read.
    group: std::vec::IntoIter<Input>,
    plan: Arc<ScanPlan>,
    output_schema: SchemaRef,
    seen: Arc<SeenEvents>,
    sender: mpsc::Sender<Result<RecordBatch>>,
    rows_left: Option<usize>,
    files_opened: Count,
    bytes_scanned: Count,
    events_read: Count,
    duplicates_dropped: Count,
}

impl PartitionScan {
    fn run(mut self) {
        let mut flattener = Flattener::new()
            .only_columns(&self.plan.flattened_columns())
            .hashing_originals();
        if self.plan.keep_raw {
            flattener = flattener.keeping_raw();
        }
        let ledger = self.plan.ledger.clone();
        let batch_rows = self.plan.batch_rows;
        ledger.scan_all(&mut self, &mut flattener, batch_rows);
        let error = match ledger.stop_error() {
            None => return,
            Some(ConvertError::Strict(problem)) => {
                DataFusionError::Execution(format!("stopped at the first problem (--strict): {problem}"))
            }
            Some(other) => DataFusionError::External(Box::new(other)),
        };
        let _ = self.sender.blocking_send(Err(error));
    }
}

impl ScanTarget for PartitionScan {
    /// The next input, unless the query has gone or has all the rows its limit asks for.
    fn next_input(&mut self) -> Option<Input> {
        if self.sender.is_closed() || self.rows_left == Some(0) {
            return None;
        }
        let input = self.group.next()?;
        self.files_opened.add(1);
        self.bytes_scanned.add(input.size().unwrap_or(0) as usize);
        Some(input)
    }

    /// Sends a batch of flattened rows; false when the scan must stop.
    fn send(&mut self, batch: std::result::Result<RecordBatch, ConvertError>, _input: &Input) -> bool {
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                let _ = self
                    .sender
                    .blocking_send(Err(DataFusionError::External(Box::new(error))));
                return false;
            }
        };
        self.events_read.add(batch.num_rows());
        let batch = match self.without_copies(batch).and_then(|b| self.output(&b)) {
            Ok(batch) => batch,
            Err(error) => {
                let _ = self.sender.blocking_send(Err(error));
                return false;
            }
        };
        let batch = match self.rows_left.as_mut() {
            Some(left) => {
                let rows = batch.num_rows().min(*left);
                *left -= rows;
                batch.slice(0, rows)
            }
            None => batch,
        };
        batch.num_rows() == 0 || self.sender.blocking_send(Ok(batch)).is_ok()
    }
}

impl PartitionScan {
    /// The batch without events read before, by this partition or another.
    fn without_copies(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let (batch, dropped) = self.seen.drop_copies(batch)?;
        self.duplicates_dropped.add(dropped);
        self.plan.ledger.add_duplicates(dropped as u64);
        Ok(batch)
    }

    /// The projected columns of a flattened batch, with the partition columns a converted table
    /// has (derived from the rows as the writer derives their directories).
    fn output(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let flattened = self.plan.flattened_count();
        let all: Vec<usize> = (0..self.plan.table_schema.fields().len()).collect();
        let wanted = self.plan.projection.as_deref().unwrap_or(&all);
        let partitioning = TablePartitioning::default();
        let derived = if wanted.iter().any(|&i| i >= flattened) {
            partition_columns(batch, &partitioning)?
        } else {
            Vec::new()
        };
        let columns = (wanted.iter().zip(self.output_schema.fields()))
            .map(|(&i, field)| match i.checked_sub(flattened) {
                // The flattener builds Utf8; the table reads text as views (`string_views`).
                None => arrow::compute::cast(batch.column(i), field.data_type()),
                Some(k) => Ok(derived[k].clone()),
            })
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.output_schema.clone(),
            columns,
            &options,
        )?)
    }
}
