//! `keytrail vacuum`: deletes the data files no version within the retention needs — files an
//! overwrite or a compaction replaced, and files no commit ever named (left by runs killed long
//! ago) — through delta-rs's vacuum, which also records the vacuum in the log.

use std::path::Path;
use std::time::Duration;

use deltalake_core::operations::vacuum::VacuumMode;
use serde::Serialize;
use tracing::info_span;

use super::OperationError;
use crate::dataset::Table;
use crate::store::Stores;

/// The default `--retain`: Delta's default `delta.deletedFileRetentionDuration`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a vacuum did (or, dry, would do).
#[derive(Debug, Clone, Serialize)]
pub struct VacuumSummary {
    pub table: String,
    pub dry_run: bool,
    pub retention_hours: f64,
    /// Paths relative to the table root.
    pub files: Vec<String>,
}

/// Deletes from the table at `target` the files unreferenced for longer than `retain`
/// (`dry_run`: lists them only). A retention shorter than the table's
/// `delta.deletedFileRetentionDuration` is refused: readers of recent versions, and runs still
/// uploading, need their files.
pub fn vacuum(target: &Path, retain: Duration, dry_run: bool) -> Result<VacuumSummary, OperationError> {
    let stores = Stores::new()?;
    let target = stores.table_target(target)?;
    let _span = info_span!("vacuum", table = %target.location).entered();
    let table = Table::open(target.location.clone(), stores.handle().clone())?;
    if !table.exists() {
        return Err(OperationError::NoTable(target.location.to_string()));
    }
    let retention = chrono::Duration::from_std(retain)
        .map_err(|e| OperationError::Invalid(format!("--retain {retain:?}: {e}")))?;
    let builder = table
        .delta()
        .clone()
        .vacuum()
        .with_retention_period(retention)
        .with_mode(VacuumMode::Full)
        .with_dry_run(dry_run);
    let (_, metrics) = stores
        .handle()
        .block_on(builder.into_future())
        .map_err(|e| OperationError::Invalid(format!("{}: vacuum: {e}", target.location)))?;
    let mut files = metrics.files_deleted;
    files.sort();
    Ok(VacuumSummary {
        table: target.location.to_string(),
        dry_run,
        retention_hours: retain.as_secs_f64() / 3600.0,
        files,
    })
}
