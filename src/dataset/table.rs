//! The Delta Lake table a dataset is, through delta-rs: where it lives (a local directory or an
//! `s3://` prefix), creating it, checking it is a keytrail table of this schema and
//! partitioning, its current files, and committing a run's files in one transaction.
//!
//! Commits go through delta-rs's default log store: a new `_delta_log/<version>.json` is written
//! with a create-if-absent put (`O_EXCL` on disk, `If-None-Match: *` on S3), so concurrent writers
//! need neither a lock server nor DynamoDB. delta-rs retries a commit that lost the race when the
//! winner does not conflict with it; every keytrail commit carries the application transaction
//! [`KEYTRAIL_APP_ID`], so two keytrail commits always conflict and the loser re-checks which
//! inputs the winner converted (see [`Table::commit`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake_core::DeltaTable;
use deltalake_core::errors::DeltaTableError;
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake_core::kernel::{Action, Add, DataType, PrimitiveType, StructField, StructType, Transaction};
use deltalake_core::logstore::{LogStoreRef, StorageConfig, default_logstore};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::runtime::Handle;
use tracing::{debug, info, info_span};
use url::Url;

use super::manifest::CommitRecord;
use super::{DataFile, Partitioning};
use crate::schema::Schema;

/// The application id of keytrail's Delta transactions (`txn` actions): its version counts the
/// keytrail commits, and two concurrent keytrail commits conflict on it.
pub const KEYTRAIL_APP_ID: &str = "keytrail";
/// Table property naming the keytrail schema a table holds.
pub const SCHEMA_PROPERTY: &str = "keytrail.schema";
/// Table property with the schema version.
pub const SCHEMA_VERSION_PROPERTY: &str = "keytrail.schemaVersion";
/// The Delta log's directory in a table.
pub const DELTA_LOG_DIR: &str = "_delta_log";
/// The key of keytrail's record in a commit's `commitInfo`.
pub const COMMIT_INFO_KEY: &str = "keytrail";
/// The commit-info key of a keytrail rewrite (compaction): `{"run_id": …, "writer": …}`.
pub const REWRITE_INFO_KEY: &str = "keytrailRewrite";

/// Errors of the table layer, each naming the table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{table}: {operation}: {source}")]
    Delta {
        table: String,
        operation: &'static str,
        /// Boxed: delta-rs's error is large, and every result of this layer would carry it.
        source: Box<DeltaTableError>,
    },
    #[error("{table}: {problem}")]
    Invalid { table: String, problem: String },
}

/// Where a table lives: its URL and the object store holding it (rooted at the store's root).
#[derive(Debug, Clone)]
pub struct TableLocation {
    url: Url,
    root_store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// How the location is shown to users (a path or an `s3://` URL).
    display: String,
}

impl TableLocation {
    /// A table in a local directory (made absolute; it need not exist yet).
    pub fn local(dir: &std::path::Path) -> Result<TableLocation, TableError> {
        let invalid = |problem: String| TableError::Invalid {
            table: dir.display().to_string(),
            problem,
        };
        let absolute = std::path::absolute(dir).map_err(|e| invalid(e.to_string()))?;
        let url = Url::from_directory_path(&absolute)
            .map_err(|()| invalid("not a usable directory path".to_string()))?;
        let prefix = ObjectPath::from_absolute_path(&absolute).map_err(|e| invalid(e.to_string()))?;
        Ok(TableLocation {
            url,
            root_store: Arc::new(object_store::local::LocalFileSystem::new()),
            prefix,
            display: dir.display().to_string(),
        })
    }

    /// A table under `s3://bucket/prefix`, in the bucket's store.
    pub fn s3(bucket: &str, prefix: &str, store: Arc<dyn ObjectStore>) -> Result<TableLocation, TableError> {
        let prefix = prefix.trim_matches('/');
        let display = format!("s3://{bucket}/{prefix}");
        let url = Url::parse(&format!("s3://{bucket}/{prefix}/")).map_err(|e| TableError::Invalid {
            table: display.clone(),
            problem: e.to_string(),
        })?;
        Ok(TableLocation {
            url,
            root_store: store,
            prefix: ObjectPath::from(prefix),
            display,
        })
    }

    /// The store, with paths relative to the table root.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(PrefixStore::new(self.root_store.clone(), self.prefix.clone()))
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The bytes of the object at `path` (relative to the table root).
    pub async fn get(&self, path: &str) -> Result<bytes::Bytes, TableError> {
        let store = self.store();
        let result = async { store.get(&ObjectPath::from(path)).await?.bytes().await }.await;
        result.map_err(|e| self.object_error("reading", path, e))
    }

    /// Writes the object at `path` (relative to the table root), replacing it.
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), TableError> {
        self.store()
            .put(&ObjectPath::from(path), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| self.object_error("writing", path, e))
    }

    /// Deletes the object at `path` (relative to the table root); one already gone is fine.
    pub async fn delete(&self, path: &str) -> Result<(), TableError> {
        match self.store().delete(&ObjectPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.object_error("deleting", path, e)),
        }
    }

    fn object_error(&self, operation: &str, path: &str, error: object_store::Error) -> TableError {
        TableError::Invalid {
            table: self.to_string(),
            problem: format!("{operation} {path}: {}", super::object_errors::one_line(&error)),
        }
    }

    /// delta-rs's handle on the table (not loaded).
    pub fn delta_table(&self) -> DeltaTable {
        DeltaTable::new(self.log_store())
    }

    /// Whether a Delta log is there (any object under `_delta_log/`).
    pub async fn has_delta_log(&self) -> Result<bool, TableError> {
        use futures::StreamExt;
        let store = self.store();
        let log = ObjectPath::from(DELTA_LOG_DIR);
        match store.list(Some(&log)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(self.object_error("listing", &format!("{DELTA_LOG_DIR}/"), e)),
        }
    }

    fn log_store(&self) -> LogStoreRef {
        default_logstore(
            self.store(),
            self.root_store.clone(),
            &self.url,
            &StorageConfig::default(),
        )
    }
}

impl std::fmt::Display for TableLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// What a table says it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDescription {
    /// The keytrail schema's name, or none for a Delta table keytrail did not create.
    pub schema: Option<String>,
    pub schema_version: Option<u32>,
    pub partition_by: Vec<String>,
    /// Whether the table has the [`crate::schema::RAW_EVENT_COLUMN`] (`--keep-raw`).
    pub keeps_raw: bool,
}

/// A file of the table's current snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFile {
    /// Relative to the table root, `/`-separated.
    pub path: String,
    pub size: u64,
    pub rows: Option<u64>,
    pub partition_values: HashMap<String, Option<String>>,
}

/// What [`Table::commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum CommitOutcome {
    /// The run's files are in the table at this version, with this record (its sequence set).
    Committed { version: u64, record: CommitRecord },
    /// Commits made since this run started converted some of its inputs (their paths): nothing
    /// was committed.
    InputsTaken(Vec<String>),
}

/// What [`Table::commit_rewrite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteOutcome {
    /// The new files replace the old ones at this version.
    Committed(u64),
    /// Some of the files to replace are no longer in the table (another writer removed them):
    /// nothing was committed.
    Gone(Vec<String>),
}

/// A Delta table, loaded at one snapshot (or not yet created).
pub struct Table {
    location: TableLocation,
    table: DeltaTable,
    runtime: Handle,
    loaded: bool,
}

impl Table {
    /// Opens the table at `location`; one without a `_delta_log` is returned unloaded
    /// ([`Table::exists`] is false).
    pub fn open(location: TableLocation, runtime: Handle) -> Result<Table, TableError> {
        let _span = info_span!("open_table", table = %location).entered();
        let mut table = location.delta_table();
        // Looked for first: delta-rs logs an error when asked to load a table that is not there.
        let loaded = runtime.block_on(location.has_delta_log())?
            && match runtime.block_on(table.load()) {
                Ok(()) => true,
                Err(DeltaTableError::NotATable(_)) => false,
                Err(source) => return Err(delta_error(&location, "reading the Delta log", source)),
            };
        Ok(Table {
            location,
            table,
            runtime,
            loaded,
        })
    }

    pub fn exists(&self) -> bool {
        self.loaded
    }

    pub fn location(&self) -> &TableLocation {
        &self.location
    }

    /// The loaded version.
    pub fn version(&self) -> Option<u64> {
        self.loaded.then(|| self.table.version()).flatten()
    }

    /// The delta-rs table, at the loaded snapshot.
    pub fn delta(&self) -> &DeltaTable {
        &self.table
    }

    /// What the loaded table holds.
    pub fn description(&self) -> Result<TableDescription, TableError> {
        let state = self.state("reading the table metadata")?;
        let metadata = state.metadata();
        let configuration = metadata.configuration();
        Ok(TableDescription {
            schema: configuration.get(SCHEMA_PROPERTY).cloned(),
            schema_version: configuration
                .get(SCHEMA_VERSION_PROPERTY)
                .and_then(|v| v.parse().ok()),
            partition_by: metadata.partition_columns().to_vec(),
            keeps_raw: state.schema().field(crate::schema::RAW_EVENT_COLUMN).is_some(),
        })
    }

    /// The files of the loaded snapshot.
    pub fn files(&self) -> Result<Vec<TableFile>, TableError> {
        if !self.loaded {
            return Ok(Vec::new());
        }
        let state = self.state("listing the table's files")?;
        Ok(state
            .log_data()
            .iter()
            .map(|file| TableFile {
                path: file.path().into_owned(),
                size: file.size().max(0) as u64,
                rows: file.num_records().map(|n| n as u64),
                partition_values: file.partition_values_map(),
            })
            .collect())
    }

    /// How many keytrail commits the loaded snapshot holds (the version of [`KEYTRAIL_APP_ID`]).
    pub fn keytrail_commits(&self) -> Result<u64, TableError> {
        if !self.loaded {
            return Ok(0);
        }
        let state = self.state("reading keytrail's transaction")?;
        let version = self
            .runtime
            .block_on(state.transaction_version(self.table.log_store().as_ref(), KEYTRAIL_APP_ID))
            .map_err(|source| delta_error(&self.location, "reading keytrail's transaction", source))?;
        Ok(version.unwrap_or(0).max(0) as u64)
    }

    /// The keytrail records of the commits at `versions` that are still in the log (read from
    /// the log's commit files), by version.
    pub fn commit_records_in(
        &self,
        versions: impl Iterator<Item = u64>,
    ) -> Result<Vec<(u64, CommitRecord)>, TableError> {
        let mut records = Vec::new();
        for (version, info) in self.commit_infos_in(versions)? {
            if let Some(value) = info.info.get(COMMIT_INFO_KEY) {
                let record: CommitRecord =
                    serde_json::from_value(value.clone()).map_err(|e| TableError::Invalid {
                        table: self.location.to_string(),
                        problem: format!("commit {version}: unreadable keytrail record: {e}"),
                    })?;
                records.push((version, record));
            }
        }
        Ok(records)
    }

    /// The keytrail runs (conversions and rewrites) that committed in `versions`.
    pub fn runs_in(&self, versions: impl Iterator<Item = u64>) -> Result<Vec<String>, TableError> {
        Ok(self
            .commit_infos_in(versions)?
            .into_iter()
            .filter_map(|(_, info)| {
                [COMMIT_INFO_KEY, REWRITE_INFO_KEY]
                    .iter()
                    .find_map(|key| info.info.get(*key)?.get("run_id")?.as_str().map(str::to_string))
            })
            .collect())
    }

    /// The commit info of each commit in `versions` (read from its log entry).
    pub fn commit_infos_in(
        &self,
        versions: impl Iterator<Item = u64>,
    ) -> Result<Vec<(u64, deltalake_core::kernel::CommitInfo)>, TableError> {
        let log_store = self.table.log_store();
        let mut infos = Vec::new();
        for version in versions {
            let bytes = self
                .runtime
                .block_on(log_store.read_commit_entry(version))
                .map_err(|source| delta_error(&self.location, "reading a commit", source))?;
            let Some(bytes) = bytes else { continue };
            let actions = deltalake_core::logstore::get_actions(version, &bytes)
                .map_err(|source| delta_error(&self.location, "reading a commit", source))?;
            infos.extend(actions.into_iter().filter_map(|action| match action {
                Action::CommitInfo(info) => Some((version, info)),
                _ => None,
            }));
        }
        Ok(infos)
    }

    /// The keys under `prefix` (relative to the table root), sorted.
    pub fn list_objects(&self, prefix: &str) -> Result<Vec<String>, TableError> {
        use futures::TryStreamExt;
        let store = self.location.store();
        let prefix_path = ObjectPath::from(prefix.trim_end_matches('/'));
        let listed: Result<Vec<_>, _> = self
            .runtime
            .block_on(store.list(Some(&prefix_path)).try_collect::<Vec<_>>());
        let mut keys: Vec<String> = listed
            .map_err(|e| self.location.object_error("listing", prefix, e))?
            .into_iter()
            .map(|meta| meta.location.to_string())
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// The bytes of the object at `path` (relative to the table root).
    pub fn get_object(&self, path: &str) -> Result<bytes::Bytes, TableError> {
        self.runtime.block_on(self.location.get(path))
    }

    /// Writes the object at `path` (relative to the table root), replacing it.
    pub fn put_object(&self, path: &str, bytes: Vec<u8>) -> Result<(), TableError> {
        self.runtime.block_on(self.location.put(path, bytes))
    }

    /// Deletes the object at `path` (relative to the table root); one already gone is fine.
    pub fn delete_object(&self, path: &str) -> Result<(), TableError> {
        self.runtime.block_on(self.location.delete(path))
    }

    pub fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// Creates the table (version 0: schema, partition columns, keytrail's description). When
    /// another writer created it first, loads theirs instead; the caller checks it.
    pub fn create(
        &mut self,
        arrow_schema: &arrow::datatypes::Schema,
        partitioning: &Partitioning,
    ) -> Result<(), TableError> {
        let _span = info_span!("create_table", table = %self.location).entered();
        let schema = Schema::builtin();
        let delta_schema =
            table_schema(arrow_schema, partitioning).map_err(|problem| TableError::Invalid {
                table: self.location.to_string(),
                problem,
            })?;
        let create = deltalake_core::operations::create::CreateBuilder::new()
            .with_log_store(self.table.log_store())
            .with_columns(delta_schema.fields().cloned())
            .with_partition_columns(partitioning.column_names())
            .with_save_mode(SaveMode::ErrorIfExists)
            // Without retries: delta-rs would otherwise commit a second table description over
            // one another writer created at the same moment.
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .with_raise_if_key_not_exists(false)
            .with_comment(format!(
                "AWS CloudTrail events ({} schema, written by keytrail)",
                schema.name()
            ))
            .with_configuration([
                (SCHEMA_PROPERTY, Some(schema.name().to_string())),
                (SCHEMA_VERSION_PROPERTY, Some(schema.version().to_string())),
            ]);
        match self.runtime.block_on(create.into_future()) {
            Ok(table) => {
                info!("created the Delta table");
                self.table = table;
                self.loaded = true;
                Ok(())
            }
            Err(source) => {
                // Another writer may have created it first (delta-rs says so in more than one
                // way): then theirs is the table, and the caller checks it.
                if self.runtime.block_on(self.location.has_delta_log())? {
                    debug!(error = %source, "another writer created the table first");
                    self.reload()
                } else {
                    Err(delta_error(&self.location, "creating the table", source))
                }
            }
        }
    }

    /// Loads the newest version.
    pub fn reload(&mut self) -> Result<(), TableError> {
        let result = if self.loaded {
            self.runtime.block_on(self.table.update_state())
        } else {
            self.runtime.block_on(self.table.load())
        };
        result.map_err(|source| delta_error(&self.location, "reading the Delta log", source))?;
        self.loaded = true;
        Ok(())
    }

    /// Commits `files` (already at their final paths) as one transaction, with `record` in the
    /// commit info; with `replace`, every file of the loaded snapshot is removed in the same
    /// commit (an overwrite). Commits by others that do not conflict are retried over by
    /// delta-rs; when other keytrail commits landed since this snapshot, their inputs are
    /// compared with `record`'s: none in common, the commit is retried on the new snapshot;
    /// some in common, nothing is committed and they are returned.
    ///
    /// `new_description` (an overwrite only) gives the table a new schema and partitioning in the
    /// same commit.
    pub fn commit(
        &mut self,
        files: &[PublishedFile],
        mut record: CommitRecord,
        replace: bool,
        new_description: Option<(&arrow::datatypes::Schema, &Partitioning)>,
    ) -> Result<CommitOutcome, TableError> {
        let _span = info_span!("commit", table = %self.location, files = files.len()).entered();
        loop {
            let snapshot_version = self.version();
            let sequence = self.keytrail_commits()? + 1;
            record.sequence = sequence;
            let mut actions: Vec<Action> = Vec::with_capacity(files.len() + 2);
            if let Some((schema, partitioning)) = new_description {
                actions.push(Action::Metadata(self.new_metadata(schema, partitioning)?));
            }
            if replace {
                let removes = self.remove_actions(true, |_| true)?;
                actions.extend(removes.into_iter().map(|(_, remove)| remove));
            }
            actions.extend(files.iter().map(|file| Action::Add(file.add_action())));
            let info = serde_json::to_value(&record).map_err(|e| TableError::Invalid {
                table: self.location.to_string(),
                problem: format!("recording the run: {e}"),
            })?;
            // An overwrite's removes name the files of the snapshot it read: after any commit
            // by another writer they are rebuilt here, never retried as they are by delta-rs
            // (which would leave files a compaction added meanwhile in the table).
            let retries = if replace { 0 } else { DELTA_RETRIES };
            let properties = CommitProperties::default()
                .with_metadata([(COMMIT_INFO_KEY.to_string(), info)])
                .with_application_transaction(Transaction::new(KEYTRAIL_APP_ID, sequence as i64))
                .with_max_retries(retries);
            let operation = DeltaOperation::Write {
                mode: if replace {
                    SaveMode::Overwrite
                } else {
                    SaveMode::Append
                },
                partition_by: None,
                predicate: None,
            };
            if let Some(version) = self.try_commit(properties, actions, operation, "committing")? {
                return Ok(CommitOutcome::Committed { version, record });
            }
            self.reload()?;
            let newer = snapshot_version.map_or(0, |v| v + 1)..=self.version().unwrap_or(0);
            let others = self.commit_records_in(newer)?;
            let mut taken: Vec<String> = others
                .iter()
                .flat_map(|(_, other)| &other.inputs)
                .filter(|input| record.inputs.iter().any(|mine| mine.same_input(input)))
                .map(|input| input.path.clone())
                .collect();
            // Another keytrail run's commit changes what an overwrite replaces and what this
            // run's inputs are: start again. Other commits (a compaction) do not.
            if (replace && !others.is_empty()) || !taken.is_empty() {
                taken.sort();
                taken.dedup();
                return Ok(CommitOutcome::InputsTaken(taken));
            }
        }
    }

    /// Replaces the files `replaced` (paths in the table) with `files` (the same rows, already
    /// at their final paths) in one transaction that changes no data (`dataChange: false`, as
    /// Delta's OPTIMIZE): readers of older versions keep their files, and writers that only
    /// append commit beside it. A conflicting commit by another writer is retried on the new
    /// snapshot as long as every replaced file is still there.
    pub fn commit_rewrite(
        &mut self,
        files: &[PublishedFile],
        replaced: &[String],
        run_id: &str,
        target_size: u64,
    ) -> Result<RewriteOutcome, TableError> {
        let _span = info_span!("commit_rewrite", table = %self.location, files = files.len(), replaced = replaced.len())
            .entered();
        loop {
            let wanted: HashSet<&str> = replaced.iter().map(String::as_str).collect();
            let removes = self.remove_actions(false, |path| wanted.contains(path))?;
            let found: HashSet<&str> = removes.iter().map(|(path, _)| path.as_str()).collect();
            let gone: Vec<String> = replaced
                .iter()
                .filter(|p| !found.contains(p.as_str()))
                .cloned()
                .collect();
            if !gone.is_empty() {
                return Ok(RewriteOutcome::Gone(gone));
            }
            let mut actions: Vec<Action> = removes.into_iter().map(|(_, remove)| remove).collect();
            actions.extend(files.iter().map(|file| {
                let mut add = file.add_action();
                add.data_change = false;
                Action::Add(add)
            }));
            let operation = DeltaOperation::Optimize {
                predicate: None,
                target_size: target_size as i64,
            };
            let info = serde_json::json!({
                "run_id": run_id,
                "writer": format!("keytrail {}", env!("CARGO_PKG_VERSION")),
                "replaced": replaced.len(),
            });
            // No retries inside delta-rs: after any other commit the files to replace are checked
            // again here, and the removes rebuilt on the new snapshot.
            let properties = CommitProperties::default()
                .with_metadata([(REWRITE_INFO_KEY.to_string(), info)])
                .with_max_retries(0);
            match self.try_commit(properties, actions, operation, "committing the rewrite")? {
                Some(version) => return Ok(RewriteOutcome::Committed(version)),
                None => self.reload()?,
            }
        }
    }

    /// Remove actions (stamped now) for the loaded snapshot's files whose path `selected`
    /// picks, with those paths.
    fn remove_actions(
        &self,
        data_change: bool,
        selected: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, Action)>, TableError> {
        let state = self.state("listing the files to replace")?;
        let now = chrono::Utc::now().timestamp_millis();
        Ok(state
            .log_data()
            .iter()
            .filter(|file| selected(file.path().as_ref()))
            .map(|file| {
                let mut remove = file.remove_action(data_change);
                remove.deletion_timestamp = Some(now);
                (file.path().to_string(), Action::Remove(remove))
            })
            .collect())
    }

    /// Commits `actions` on the loaded snapshot: the version, or `None` when another writer's
    /// commit landed first (the caller reloads and decides).
    fn try_commit(
        &self,
        properties: CommitProperties,
        actions: Vec<Action>,
        operation: DeltaOperation,
        what: &'static str,
    ) -> Result<Option<u64>, TableError> {
        let state = self.state(what)?;
        let commit = CommitBuilder::from(properties).with_actions(actions).build(
            Some(state),
            self.table.log_store(),
            operation,
        );
        match self.runtime.block_on(commit.into_future()) {
            Ok(done) => {
                let version = done.version();
                info!(version, what, "committed");
                Ok(Some(version))
            }
            Err(error) if lost_race(&error) => {
                debug!(%error, what, "another writer committed first");
                Ok(None)
            }
            Err(source) => Err(delta_error(&self.location, what, source)),
        }
    }

    /// The table's metadata with another schema and partitioning (same table id, keytrail's
    /// description of this version).
    fn new_metadata(
        &self,
        schema: &arrow::datatypes::Schema,
        partitioning: &Partitioning,
    ) -> Result<deltalake_core::kernel::Metadata, TableError> {
        use deltalake_core::kernel::MetadataExt;
        let invalid = |problem: String| TableError::Invalid {
            table: self.location.to_string(),
            problem,
        };
        let delta_schema = table_schema(schema, partitioning).map_err(invalid)?;
        let keytrail = Schema::builtin();
        let id = self
            .state("reading the table metadata")?
            .metadata()
            .id()
            .to_string();
        deltalake_core::kernel::new_metadata(
            &delta_schema,
            partitioning.column_names(),
            [
                (SCHEMA_PROPERTY.to_string(), keytrail.name().to_string()),
                (
                    SCHEMA_VERSION_PROPERTY.to_string(),
                    keytrail.version().to_string(),
                ),
            ],
        )
        .and_then(|metadata| metadata.with_table_id(id))
        .map_err(|e| invalid(format!("describing the new schema: {e}")))
    }

    fn state(
        &self,
        operation: &'static str,
    ) -> Result<&deltalake_core::table::state::DeltaTableState, TableError> {
        self.table
            .snapshot()
            .map_err(|source| delta_error(&self.location, operation, source))
    }
}

/// A data file written at its final path, to be added to the table.
#[derive(Debug, Clone)]
pub struct PublishedFile {
    pub file: DataFile,
    pub partition_values: Vec<(String, Option<String>)>,
}

impl PublishedFile {
    fn add_action(&self) -> Add {
        Add {
            path: self.file.path.clone(),
            partition_values: self.partition_values.iter().cloned().collect(),
            size: self.file.bytes as i64,
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats: self.file.stats.clone(),
            ..Default::default()
        }
    }
}

/// The Delta schema of a table of `arrow_schema`'s rows partitioned by `partitioning`: the data
/// columns, then the partition columns (strings, as in the directory names).
pub fn table_schema(
    arrow_schema: &arrow::datatypes::Schema,
    partitioning: &Partitioning,
) -> Result<StructType, String> {
    let data: StructType = arrow_schema
        .try_into_kernel()
        .map_err(|e| format!("the schema has no Delta equivalent: {e}"))?;
    // Spark, Athena and Databricks show a field's `comment` as the column's description.
    let schema = Schema::builtin();
    let data = data
        .fields()
        .map(|field| match schema.column_description(field.name()) {
            Some(description) => field.clone().with_metadata([("comment", description)]),
            None => field.clone(),
        });
    let partitions = partitioning
        .column_names()
        .into_iter()
        .map(|name| StructField::nullable(name, DataType::Primitive(PrimitiveType::String)));
    StructType::try_new(data.chain(partitions)).map_err(|e| e.to_string())
}

/// Retries delta-rs makes of a commit that conflicts with no commit that landed first.
const DELTA_RETRIES: usize = 15;

/// Whether a commit failed because another writer's commit landed first.
fn lost_race(error: &DeltaTableError) -> bool {
    matches!(
        error,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

fn delta_error(location: &TableLocation, operation: &'static str, source: DeltaTableError) -> TableError {
    TableError::Delta {
        table: location.to_string(),
        operation,
        source: Box::new(source),
    }
}
