//! The `events` table over a Delta table's snapshot: delta-rs's table provider, with a guard for
//! its scans that read partition columns only.
//!
//! delta-rs 1.1 answers a scan projecting only partition columns from the log's file entries
//! (`DeltaScanMetaExec`) and ignores the scan's LIMIT there: `SELECT region FROM events LIMIT 1`
//! returned every row. Such a scan here also reads the first data column, which takes delta-rs's
//! Parquet path (where LIMIT holds), and drops it again.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::prelude::Expr;

/// delta-rs's provider of a Delta table's snapshot, guarded (see the module docs).
#[derive(Debug)]
pub(super) struct DeltaEvents {
    inner: Arc<dyn TableProvider>,
    /// Positions of the partition columns in the table's schema.
    partition_columns: Vec<usize>,
}

impl DeltaEvents {
    pub(super) fn new(inner: Arc<dyn TableProvider>, partition_columns: &[String]) -> DeltaEvents {
        let schema = inner.schema();
        let partition_columns = partition_columns
            .iter()
            .filter_map(|name| schema.index_of(name).ok())
            .collect();
        DeltaEvents {
            inner,
            partition_columns,
        }
    }
}

#[async_trait::async_trait]
impl TableProvider for DeltaEvents {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let partitions_only =
            projection.filter(|p| !p.is_empty() && p.iter().all(|i| self.partition_columns.contains(i)));
        let (Some(projection), Some(_)) = (partitions_only, limit) else {
            return self.inner.scan(state, projection, filters, limit).await;
        };
        let data_column = (0..self.schema().fields().len())
            .find(|i| !self.partition_columns.contains(i))
            .unwrap_or(0);
        let mut widened = projection.clone();
        widened.push(data_column);
        let plan = self.inner.scan(state, Some(&widened), filters, limit).await?;
        let schema = plan.schema();
        let columns: Vec<(Arc<dyn PhysicalExpr>, String)> = (0..projection.len())
            .map(|i| {
                let name = schema.field(i).name().clone();
                (Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>, name)
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(columns, plan)?))
    }
}
