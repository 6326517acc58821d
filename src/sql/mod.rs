//! SQL over converted datasets with embedded DataFusion.
//!
//! [`SqlSession::open`] registers a table as `events` — a Delta table's current snapshot through
//! delta-rs's table provider (partition values and file statistics from the log prune files), or
//! a directory of Hive-partitioned Parquet files as a listing table — and the view `kms_events`,
//! and adds JSON functions (`json_get_str`, `->>`, ...) for the raw JSON columns. Sessions are
//! read-only unless opened with `allow_write`.

mod delta_events;
pub mod output;
pub mod queries;
pub mod raw;
pub mod shell;
mod string_views;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext, col, lit};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::dialect_from_str;

use crate::dataset::layout::{MARKER_FILE, META_DIR, is_hidden_name};
use crate::dataset::table::{DELTA_LOG_DIR, SCHEMA_VERSION_PROPERTY};
use crate::dataset::{DatasetError, DatasetMarker, Partitioning, TableError, TableLocation};
use crate::schema::Schema;
use crate::store::{S3Url, StoreError};
use futures::StreamExt;
use object_store::ObjectStoreExt;

/// Errors of the SQL layer; each is one clear line, and keeps the error it comes from.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("{0}: no such directory")]
    NotFound(PathBuf),
    #[error(
        "{0}: no Parquet files found and no CloudTrail logs to read (convert logs into it with `keytrail convert ... --output {0}`)"
    )]
    NoParquet(PathBuf),
    #[error("{path}: {source}")]
    Path { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(
        "{path}: written with schema version {found} but this keytrail reads version {expected}; convert it again"
    )]
    SchemaVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("keytrail sql is read-only: {0} is refused (pass --allow-write to allow it)")]
    ReadOnly(String),
    #[error("unsupported SQL dialect {0}")]
    Dialect(String),
    #[error("no table or view named `{0}` (\\d lists them)")]
    NoTable(String),
    #[error(transparent)]
    Query(#[from] queries::QueryError),
    #[error(transparent)]
    Io(std::io::Error),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("the line editor failed: {0}")]
    Editor(#[from] rustyline::error::ReadlineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The S3 prefix holds CloudTrail logs, not Parquet: opened as raw logs instead.
    #[error("raw CloudTrail logs")]
    RawLogs,
    /// Not a `#[source]`: the message already is the innermost cause, on one line.
    #[error("{}", one_line(.0))]
    DataFusion(DataFusionError),
}

impl From<DataFusionError> for SqlError {
    fn from(error: DataFusionError) -> Self {
        SqlError::DataFusion(error)
    }
}

/// The name of the table holding every event.
pub const EVENTS_TABLE: &str = "events";
/// The view of KMS events.
pub const KMS_VIEW: &str = "kms_events";
/// The `event_source` of the events in [`KMS_VIEW`].
const KMS_SOURCE: &str = "kms.amazonaws.com";

/// A DataFusion session over one converted dataset, or over raw CloudTrail logs.
pub struct SqlSession {
    ctx: SessionContext,
    options: SQLOptions,
    partition_columns: Vec<String>,
    /// The `events` table when it is raw logs read on the fly.
    raw: Option<Arc<raw::RawEvents>>,
    /// Problems with raw inputs reported by [`SqlSession::take_scan_summary`] so far.
    input_problems: std::sync::atomic::AtomicU64,
}

/// How a session opens its table.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Allow DDL and DML statements.
    pub allow_write: bool,
    /// How raw logs are read, when the location holds no converted table.
    pub raw: raw::RawOptions,
}

impl SqlSession {
    /// Opens a dataset directory or an `s3://bucket/prefix` location (see [`crate::store`] for
    /// the AWS settings read from the environment).
    pub async fn open_location(location: &str, allow_write: bool) -> Result<SqlSession, SqlError> {
        let options = SessionOptions {
            allow_write,
            ..SessionOptions::default()
        };
        SqlSession::open_with(location, &options).await
    }

    /// Opens what `location` holds: a Delta table, a directory of Hive-partitioned Parquet, or
    /// else raw CloudTrail logs (files, directories, globs or an S3 prefix; see [`raw`]).
    pub async fn open_with(location: &str, options: &SessionOptions) -> Result<SqlSession, SqlError> {
        let allow_write = options.allow_write;
        match S3Url::parse(location) {
            None => {
                let path = Path::new(location);
                if path.is_dir() && (path.join(DELTA_LOG_DIR).is_dir() || first_parquet_file(path).is_some())
                {
                    return SqlSession::open(path, allow_write).await;
                }
                if !path.exists() && !location.contains(['*', '?', '[', '{']) {
                    return Err(SqlError::NotFound(path.to_path_buf()));
                }
                let found = crate::read::discover(&[location.to_string()], None);
                if found.inputs.is_empty() {
                    return Err(SqlError::NoParquet(path.to_path_buf()));
                }
                SqlSession::open_raw(location, options).await
            }
            Some(url) => {
                let url = url?;
                let store = crate::store::s3_store(&url.bucket).await?;
                let table =
                    TableLocation::s3(&url.bucket, &url.key, store.clone()).map_err(DatasetError::from)?;
                if table.has_delta_log().await.map_err(DatasetError::from)? {
                    return SqlSession::open_delta(&table, allow_write).await;
                }
                match SqlSession::open_s3(&url, store, allow_write).await {
                    Err(SqlError::RawLogs) => SqlSession::open_raw(location, options).await,
                    opened => opened,
                }
            }
        }
    }

    async fn open_raw(location: &str, options: &SessionOptions) -> Result<SqlSession, SqlError> {
        SqlSession::open_raw_inputs(vec![location.to_string()], options).await
    }

    /// Opens raw logs as `events`, read on the fly by each query: `inputs` as `keytrail
    /// convert` takes them (files, directories, globs, `s3://` prefixes).
    pub async fn open_raw_inputs(
        inputs: Vec<String>,
        options: &SessionOptions,
    ) -> Result<SqlSession, SqlError> {
        let stores = Arc::new(crate::store::Stores::on(tokio::runtime::Handle::current()));
        let table = Arc::new(raw::RawEvents::new(inputs, stores, options.raw.clone()));
        // One reader per core: raw logs are parsed, not pruned.
        let ctx = new_context(Partitions::PerCore)?;
        let mut session = SqlSession::with_events_provider(
            ctx,
            table.clone(),
            Partitioning::default().column_names(),
            options.allow_write,
        )
        .await?;
        session.raw = Some(table);
        Ok(session)
    }

    /// What the statements run since the last call read from raw logs: `None` when the table
    /// is not raw logs or no statement read it.
    pub fn take_scan_summary(&self) -> Option<crate::convert::scan::ScanSummary> {
        let summary = self.raw.as_ref().and_then(|raw| raw.take_summary())?;
        self.input_problems
            .fetch_add(summary.problem_count, std::sync::atomic::Ordering::Relaxed);
        Some(summary)
    }

    /// Problems with raw inputs found by the statements reported so far (a CLI exits 3 then).
    pub fn input_problems(&self) -> u64 {
        self.input_problems.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `events` is raw logs read by each query.
    pub fn is_raw(&self) -> bool {
        self.raw.is_some()
    }

    /// Opens the dataset in `dir`: a Delta table, or else a directory of Hive-partitioned
    /// Parquet files (such as a dataset of keytrail 0.1).
    pub async fn open(dir: &Path, allow_write: bool) -> Result<SqlSession, SqlError> {
        if !dir.is_dir() {
            return Err(SqlError::NotFound(dir.to_path_buf()));
        }
        if dir.join(DELTA_LOG_DIR).is_dir() {
            let table = TableLocation::local(dir).map_err(DatasetError::from)?;
            return SqlSession::open_delta(&table, allow_write).await;
        }
        let first_file = first_parquet_file(dir).ok_or_else(|| SqlError::NoParquet(dir.to_path_buf()))?;
        let marker_path = dir.join(META_DIR).join(MARKER_FILE);
        let partition_columns = match std::fs::read(&marker_path) {
            Ok(marker) => marker_partition_columns(&marker, &marker_path)?,
            Err(_) => {
                let relative = first_file.strip_prefix(dir).unwrap_or(&first_file);
                hive_columns(relative.to_string_lossy().split(std::path::MAIN_SEPARATOR))
            }
        };
        let absolute = std::path::absolute(dir).map_err(|source| SqlError::Path {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut url = absolute.to_string_lossy().into_owned();
        if !url.ends_with('/') {
            url.push('/');
        }
        SqlSession::with_events_table(&url, partition_columns, allow_write, |_| Ok(())).await
    }

    /// Opens the dataset under an S3 prefix: its description from `_keytrail/dataset.json`, or
    /// else the partition keys from the first Parquet object's key.
    async fn open_s3(
        url: &S3Url,
        store: Arc<dyn object_store::ObjectStore>,
        allow_write: bool,
    ) -> Result<SqlSession, SqlError> {
        let access = |url: &S3Url, error| {
            SqlError::Store(StoreError::Access {
                url: url.to_string(),
                error,
            })
        };
        let marker_url = url.join(&format!("{META_DIR}/{MARKER_FILE}"));
        let marker_path = marker_url.path().expect("a key");
        let partition_columns = match store.get(&marker_path).await {
            Ok(got) => {
                let marker = got.bytes().await.map_err(|e| access(&marker_url, e))?;
                marker_partition_columns(&marker, Path::new(&marker_url.to_string()))?
            }
            Err(object_store::Error::NotFound { .. }) => {
                let prefix = url.path();
                let skip = prefix.as_ref().map_or(0, |p| p.parts().count());
                let mut listing = store.list(prefix.as_ref());
                let mut first = None;
                while let Some(meta) = listing.next().await {
                    let meta = meta.map_err(|e| access(url, e))?;
                    let parts: Vec<String> = meta
                        .location
                        .parts()
                        .skip(skip)
                        .map(|p| p.as_ref().to_string())
                        .collect();
                    if parts.iter().any(|p| is_hidden_name(p)) {
                        continue;
                    }
                    if meta.location.as_ref().ends_with(".parquet") {
                        first = Some(parts);
                        break;
                    }
                    if looks_like_logs(meta.location.as_ref()) {
                        return Err(SqlError::RawLogs);
                    }
                }
                let parts = first.ok_or_else(|| SqlError::NoParquet(PathBuf::from(url.to_string())))?;
                hive_columns(parts.iter().map(String::as_str))
            }
            Err(e) => return Err(access(&marker_url, e)),
        };
        let table_url = format!("{}/", url.to_string().trim_end_matches('/'));
        let bucket_url = url::Url::parse(&url.bucket_url()).map_err(|e| {
            SqlError::Store(StoreError::Url {
                url: url.to_string(),
                message: e.to_string(),
            })
        })?;
        SqlSession::with_events_table(&table_url, partition_columns, allow_write, |ctx| {
            ctx.register_object_store(&bucket_url, store);
            Ok(())
        })
        .await
    }

    /// Opens the current snapshot of the Delta table at `location` (delta-rs's table provider:
    /// partition values and file statistics from the log prune files, Parquet statistics and
    /// page indexes prune row groups and pages).
    async fn open_delta(location: &TableLocation, allow_write: bool) -> Result<SqlSession, SqlError> {
        let delta_error = |operation: &'static str| {
            move |source| {
                SqlError::Dataset(DatasetError::Table(TableError::Delta {
                    table: location.to_string(),
                    operation,
                    source: Box::new(source),
                }))
            }
        };
        let mut table = location.delta_table();
        table.load().await.map_err(delta_error("reading the Delta log"))?;
        let state = table.snapshot().map_err(delta_error("reading the Delta log"))?;
        let configuration = state.metadata().configuration();
        let expected = Schema::builtin().version();
        let found = configuration
            .get(SCHEMA_VERSION_PROPERTY)
            .and_then(|v| v.parse::<u32>().ok());
        if found != Some(expected) {
            return Err(SqlError::SchemaVersion {
                path: PathBuf::from(location.to_string()),
                found: found.unwrap_or(0),
                expected,
            });
        }
        let partition_columns = state.metadata().partition_columns().to_vec();
        let ctx = new_context(Partitions::ScanRanges)?;
        table
            .update_datafusion_session(&ctx.state())
            .map_err(delta_error("registering the table's store"))?;
        let provider = table.table_provider().with_session(Arc::new(ctx.state())).await?;
        let provider = Arc::new(delta_events::DeltaEvents::new(provider, &partition_columns));
        SqlSession::with_events_provider(ctx, provider, partition_columns, allow_write).await
    }

    async fn with_events_table(
        table_url: &str,
        partition_columns: Vec<String>,
        allow_write: bool,
        register_store: impl FnOnce(&SessionContext) -> Result<(), SqlError>,
    ) -> Result<SqlSession, SqlError> {
        let ctx = new_context(Partitions::ScanRanges)?;
        register_store(&ctx)?;
        let table = listing_table(table_url, &partition_columns).await?;
        SqlSession::with_events_provider(ctx, table, partition_columns, allow_write).await
    }

    async fn with_events_provider(
        ctx: SessionContext,
        table: Arc<dyn TableProvider>,
        partition_columns: Vec<String>,
        allow_write: bool,
    ) -> Result<SqlSession, SqlError> {
        ctx.register_table(EVENTS_TABLE, table)?;
        // Built as a plan, not from `CREATE VIEW ... SELECT *`: planning that SQL named every
        // one of the ~100 columns in text (5 % of a `keytrail sql` process that reads nothing).
        let kms = (ctx.table(EVENTS_TABLE).await?).filter(col("event_source").eq(lit(KMS_SOURCE)))?;
        ctx.register_table(KMS_VIEW, kms.into_view())?;

        let options = SQLOptions::new()
            .with_allow_ddl(allow_write)
            .with_allow_dml(allow_write)
            .with_allow_statements(true);
        Ok(SqlSession {
            ctx,
            options,
            partition_columns,
            raw: None,
            input_problems: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The Hive partition columns of `events`.
    pub fn partition_columns(&self) -> &[String] {
        &self.partition_columns
    }

    /// Splits SQL text into statements (DataFusion's dialect, comments and quotes respected).
    pub fn split(&self, sql: &str) -> Result<Vec<Statement>, SqlError> {
        let name = self.ctx.state().config().options().sql_parser.dialect;
        let dialect =
            dialect_from_str(name.as_ref()).ok_or_else(|| SqlError::Dialect(name.as_ref().to_string()))?;
        let statements = DFParser::parse_sql_with_dialect(sql, dialect.as_ref())?;
        Ok(statements.into_iter().collect())
    }

    /// Plans and starts one statement; its result streams.
    pub async fn execute(&self, statement: Statement) -> Result<SendableRecordBatchStream, SqlError> {
        let state = self.ctx.state();
        let text = statement.to_string();
        let plan = state.statement_to_plan(statement).await?;
        if self.options.verify_plan(&plan).is_err() {
            let verb: Vec<&str> = text.split_whitespace().take(2).collect();
            return Err(SqlError::ReadOnly(format!(
                "`{} ...`",
                verb.join(" ").to_uppercase()
            )));
        }
        let frame = self.ctx.execute_logical_plan(plan).await?;
        Ok(frame.execute_stream().await?)
    }
}

/// How many partitions a session's plans run in.
#[derive(Debug, Clone, Copy)]
enum Partitions {
    /// One per core (DataFusion's default).
    PerCore,
    /// Three per core, for tables of Parquet files. A scan's byte ranges are dealt out to the
    /// partitions before row groups are pruned, and the row groups a query keeps sit together
    /// (one key's events are in its region's files, next to each other in path order): with a
    /// range per core, one core read them all while the other idled. Finer ranges spread them
    /// (a key's usage over 1M events, 2 cores: 82 -> 62 ms, benches/README.md).
    ScanRanges,
}

fn new_context(partitions: Partitions) -> Result<SessionContext, SqlError> {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema("keytrail", "public");
    if let Partitions::ScanRanges = partitions {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        config = config.with_target_partitions(3 * cores);
    }
    // Text is read as Utf8View (DataFusion's default; see `string_views` for why).
    config.options_mut().execution.parquet.schema_force_view_types = true;
    let mut ctx = SessionContext::new_with_config(config);
    datafusion_functions_json::register_all(&mut ctx)?;
    Ok(ctx)
}

/// DataFusion nests errors ("Optimizer rule ... failed caused by ..."); the innermost one says
/// what is wrong, on one line.
fn one_line(error: &DataFusionError) -> String {
    let root = error.find_root().strip_backtrace();
    let text = if root.trim().is_empty() {
        error.strip_backtrace()
    } else {
        root
    };
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.split_once(" Valid fields are ") {
        Some((head, _)) => format!("{head} (`\\d events` in the shell lists the columns)"),
        None => text,
    }
}

async fn listing_table(url: &str, partition_columns: &[String]) -> Result<Arc<dyn TableProvider>, SqlError> {
    let table_url = ListingTableUrl::parse(url)?;
    let format = ParquetFormat::default().with_enable_pruning(true);
    let options = ListingOptions::new(Arc::new(format))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            partition_columns
                .iter()
                .map(|c| (c.clone(), DataType::Utf8))
                .collect(),
        )
        .with_file_sort_order(vec![vec![col("event_time").sort(true, false)]]);
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(string_views::with_views(&Schema::builtin().arrow_schema()));
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// The partition columns named in `_keytrail/dataset.json`, after checking its schema version.
fn marker_partition_columns(marker: &[u8], location: &Path) -> Result<Vec<String>, SqlError> {
    let marker = DatasetMarker::parse(marker, location)?;
    let expected = Schema::builtin().version();
    if marker.schema_version != expected {
        return Err(SqlError::SchemaVersion {
            path: location.to_path_buf(),
            found: marker.schema_version,
            expected,
        });
    }
    Ok(marker.partition_by)
}

/// The `key=value` directory names above a data file (its path relative to the dataset root).
fn hive_columns<'a>(relative: impl Iterator<Item = &'a str>) -> Vec<String> {
    let parts: Vec<&str> = relative.collect();
    let directories = &parts[..parts.len().saturating_sub(1)];
    directories
        .iter()
        .filter_map(|part| part.split_once('=').map(|(k, _)| k.to_string()))
        .collect()
}

/// Whether an object's name is one CloudTrail logs (or the exports `keytrail convert` reads)
/// have: what makes an S3 prefix without Parquet a table of raw logs.
fn looks_like_logs(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
    [".json", ".json.gz", ".gz", ".ndjson", ".jsonl", ".log", ".zip"]
        .iter()
        .any(|extension| name.ends_with(extension))
}

fn first_parquet_file(dir: &Path) -> Option<PathBuf> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_str().is_some_and(is_hidden_name))
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "parquet"))
        .map(|e| e.into_path())
}
