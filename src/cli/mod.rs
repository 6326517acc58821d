//! The `keytrail` command line.

mod operations;
mod progress;
mod summary;
mod values;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::convert::{ConvertOptions, DEFAULT_BATCH_ROWS, convert};
use crate::dataset::{OutputMode, Partitioning};
use crate::synth::GenOptions;
use crate::write::options::{DEFAULT_MEMORY_LIMIT_BYTES, DEFAULT_TARGET_FILE_BYTES, default_threads};
use crate::write::{ByteSize, ParquetCompression, SpillCompression, WriteOptions};
use values::{ResultFormat, SpillCodec};

/// Exit code: everything converted.
pub const EXIT_OK: u8 = 0;
/// Exit code: the run failed; nothing was committed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: bad command-line usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the run completed and committed, but some inputs or records were rejected.
pub const EXIT_PARTIAL: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "keytrail",
    version,
    about = "Turn AWS CloudTrail logs (with first-class KMS care) into Hive-partitioned Parquet",
    propagate_version = true
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert CloudTrail JSON (files, directories, globs, gzip, stdin) into partitioned Parquet.
    Convert(ConvertArgs),
    /// Query a converted dataset with SQL: one-shot, from a file, a named KMS investigation, or
    /// an interactive shell.
    Sql(SqlArgs),
    /// Print table definitions generated from the schema: Athena or Spark DDL, the Arrow schema,
    /// or the Markdown column table.
    Schema(SchemaArgs),
    /// Write a synthetic CloudTrail delivery tree (mostly KMS events) for benchmarks.
    Gen(GenArgs),
    /// Make a dataset written by keytrail 0.1 (`_keytrail/runs/`) a Delta Lake table in place,
    /// keeping its files and the record of the inputs it converted.
    Upgrade(UpgradeArgs),
    /// Rewrite partitions that hold several small files (hourly incremental runs) into large
    /// files in the usual sort order, as one Delta commit; readers and running converts are not
    /// disturbed.
    Compact(CompactArgs),
    /// Delete data files no version within the retention needs (replaced by an overwrite or a
    /// compaction, or never committed).
    Vacuum(VacuumArgs),
    /// Describe a table: version, files, rows, bytes, partitions, small files, last commits.
    Info(InfoArgs),
}

#[derive(Debug, Args)]
struct CompactArgs {
    /// The table: a directory or an s3:// URL.
    #[arg(value_name = "TABLE")]
    table: PathBuf,

    /// Files at least this large are kept; new files are closed at this size.
    #[arg(long, value_name = "SIZE", default_value_t = ByteSize(DEFAULT_TARGET_FILE_BYTES))]
    target_file_size: ByteSize,

    /// Only partitions whose path has this `key=value` (e.g. `region=us-east-1`); repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    partition: Vec<String>,

    /// Rewrite a partition once it holds at least this many small files.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..))]
    min_files: u16,

    /// Hold at most this much in memory while merging.
    #[arg(long, value_name = "SIZE", default_value_t = ByteSize(DEFAULT_MEMORY_LIMIT_BYTES))]
    memory_limit: ByteSize,

    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct VacuumArgs {
    /// The table: a directory or an s3:// URL.
    #[arg(value_name = "TABLE")]
    table: PathBuf,

    /// Keep files unreferenced for less than this (e.g. 7d, 168h); at least the table's
    /// `delta.deletedFileRetentionDuration` (7 days unless set).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    retain: std::time::Duration,

    /// List what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,

    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct InfoArgs {
    /// The table: a directory or an s3:// URL.
    #[arg(value_name = "TABLE")]
    table: PathBuf,

    /// How many of the newest commits to show.
    #[arg(long, value_name = "N", default_value_t = 10)]
    last: usize,

    /// Print everything as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct UpgradeArgs {
    /// The dataset's directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SchemaFormat {
    Arrow,
    Athena,
    Spark,
    Markdown,
}

#[derive(Debug, Args)]
struct SchemaArgs {
    #[arg(long, value_enum, default_value = "athena")]
    format: SchemaFormat,

    /// Where the dataset lives (s3://bucket/prefix/ for Athena, a path or URL for Spark).
    #[arg(
        long,
        value_name = "URL",
        default_value = "s3://your-bucket/cloudtrail-parquet/"
    )]
    location: String,

    /// Table name in the DDL.
    #[arg(long, value_name = "NAME", default_value = "cloudtrail_events")]
    table: String,

    /// The partition keys the table was converted with (for `--format arrow`; Athena and Spark
    /// read them from the Delta log).
    #[arg(short, long, value_name = "KEYS", default_value_t = Partitioning::default())]
    partition_by: Partitioning,
}

#[derive(Debug, Args)]
struct SqlArgs {
    /// What `events` (and the view `kms_events`) is: a table written by `keytrail convert` (a
    /// directory or an s3://bucket/prefix), or raw CloudTrail logs — a file, directory, glob or
    /// s3:// prefix of the files `convert` reads — flattened on the fly by each query.
    #[arg(value_name = "DIR|FILE|GLOB|URL", required_unless_present = "list_queries")]
    dataset: Option<String>,

    /// SQL to run (several statements separated by `;` are run in turn). Without SQL, -f or
    /// --query: an interactive shell on a terminal, else statements are read from stdin.
    #[arg(value_name = "SQL", conflicts_with_all = ["file", "query"])]
    sql: Option<String>,

    /// Run the statements in FILE.
    #[arg(short, long, value_name = "FILE", conflicts_with = "query")]
    file: Option<PathBuf>,

    /// Run a ready-made KMS investigation (see --list-queries).
    #[arg(long, value_name = "NAME")]
    query: Option<String>,

    /// A parameter of --query, such as --param key=alias/app-data (repeatable).
    #[arg(short = 'P', long = "param", value_name = "NAME=VALUE", value_parser = parse_param, requires = "query")]
    params: Vec<(String, String)>,

    /// List the ready-made investigations and their parameters.
    #[arg(long)]
    list_queries: bool,

    /// Result format (default: table on a terminal, csv otherwise; from the extension with --output).
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<ResultFormat>,

    /// Write results to FILE (csv, json, ndjson or parquet) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Rows shown by the table format (the rest are counted).
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_rows: usize,

    /// Allow statements that write (CREATE, INSERT, COPY, ...).
    #[arg(long)]
    allow_write: bool,

    /// Raw logs: fail a query at the first input or record that cannot be read (else each
    /// query reports them on stderr and keytrail exits 3).
    #[arg(long)]
    strict: bool,

    /// Raw logs: how long after an event the file holding it may have been delivered. Filters
    /// on event_time or event_date skip files delivered outside the times asked for, widened by
    /// this much; `off` never skips files by delivery time.
    #[arg(long, value_name = "DURATION|off", default_value = "1h", value_parser = parse_margin)]
    delivery_margin: DeliveryMargin,

    /// Raw logs: add the column raw_event, each event's original JSON text as read.
    #[arg(long)]
    keep_raw: bool,
}

/// `--delivery-margin`: a duration, or `off`.
#[derive(Debug, Clone, Copy)]
struct DeliveryMargin(Option<std::time::Duration>);

fn parse_margin(text: &str) -> Result<DeliveryMargin, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(DeliveryMargin(None));
    }
    humantime::parse_duration(text)
        .map(|d| DeliveryMargin(Some(d)))
        .map_err(|e| format!("`{text}`: {e} (a duration such as 30m, 2h or 1d, or `off`)"))
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))
}

#[derive(Debug, Args)]
struct GenArgs {
    /// Directory to write AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/*.json.gz into.
    #[arg(value_name = "OUT")]
    output: PathBuf,

    /// Number of events.
    #[arg(short = 'n', long, default_value_t = GenOptions::default().events)]
    events: u64,

    /// Random seed: the same seed writes the same files.
    #[arg(long, default_value_t = GenOptions::default().seed)]
    seed: u64,

    /// Records per delivery file.
    #[arg(long, default_value_t = GenOptions::default().records_per_file as u64, value_parser = clap::value_parser!(u64).range(1..))]
    records_per_file: u64,

    /// Minutes between two files of one account and Region (each holds the events of the
    /// minutes before it was delivered).
    #[arg(long, value_name = "MINUTES", default_value_t = GenOptions::default().file_interval_minutes, value_parser = clap::value_parser!(u32).range(1..))]
    file_interval: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProgressMode {
    /// A progress bar when stderr is a terminal.
    Auto,
    On,
    Off,
}

#[derive(Debug, Args)]
struct ConvertArgs {
    /// Inputs: files, directories (searched recursively), glob patterns (quote them),
    /// s3://bucket/prefix (listed; globs allowed in the key), or `-` for stdin.
    /// Content decides the format: S3 delivery files {"Records":[...]}, plain or gzip, single
    /// events, JSON arrays, NDJSON and EventBridge envelopes.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<String>,

    /// The Delta Lake table to write: a directory or an s3://bucket/prefix (created if missing;
    /// must be empty or a keytrail table). Files become visible to readers only when the run
    /// commits to its _delta_log/; any number of runs may write one table at once.
    #[arg(short, long, value_name = "DIR|URL")]
    output: PathBuf,

    /// Partition keys in directory order, comma-separated, from: account, region, date, year,
    /// month, day, service; or `none`.
    #[arg(short, long, value_name = "KEYS", default_value_t = Partitioning::default())]
    partition_by: Partitioning,

    /// Replace the table's data (a Delta overwrite: readers of the old version are not disturbed,
    /// its files stay until vacuumed).
    #[arg(long, conflicts_with = "incremental")]
    overwrite: bool,

    /// Add to the table: inputs an earlier run converted unchanged are skipped (each commit
    /// records its inputs' path, size, modification time or ETag and content hash), and events
    /// already in the table are dropped as duplicates.
    #[arg(long)]
    incremental: bool,

    /// Stop at the first problem (bad record, unreadable input) with exit code 1 and commit
    /// nothing, instead of quarantining it and going on.
    #[arg(long)]
    strict: bool,

    /// Keep each event's original JSON text, byte for byte as read, in the column `raw_event`
    /// (what CloudTrail Lake's eventJson gives). A table keeps it or not for all its runs.
    #[arg(long)]
    keep_raw: bool,

    /// Convert only slice I of N of the inputs (by a hash of each input's path), so N processes
    /// on N machines, given the same inputs and output, convert an archive into one table
    /// together.
    #[arg(long, value_name = "I/N")]
    shard: Option<crate::convert::Shard>,

    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,

    /// Progress bar on stderr.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    progress: ProgressMode,

    /// Worker threads (default: the number of cores).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,

    /// Close a Parquet file once it reaches this size (e.g. 256MiB, 1GB).
    #[arg(long, value_name = "SIZE", default_value_t = ByteSize(DEFAULT_TARGET_FILE_BYTES))]
    target_file_size: ByteSize,

    /// Hold at most this much in memory (rows waiting to be sorted, Parquet row groups being
    /// built); beyond it rows are written out in time order, or spilled as sorted runs.
    #[arg(long, value_name = "SIZE", default_value_t = ByteSize(DEFAULT_MEMORY_LIMIT_BYTES))]
    memory_limit: ByteSize,

    /// Compression of the Parquet files: zstd (level 1), zstd(LEVEL) with LEVEL 1-22, snappy,
    /// or none.
    #[arg(long, value_name = "CODEC", default_value_t = ParquetCompression::default())]
    compression: ParquetCompression,

    /// Compression of the sorted runs spilled to disk (rows that arrive out of order).
    #[arg(long, value_enum, default_value_t = SpillCodec::from(SpillCompression::default()), value_name = "CODEC")]
    spill_compression: SpillCodec,
}

/// Runs the CLI and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // `sql` lists the problems of the raw inputs a query read after its results; logging each
    // as it is found too would say everything twice.
    let lists_input_problems = matches!(cli.command, Command::Sql(_));
    init_logging(cli.verbose, cli.quiet, lists_input_problems);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("keytrail: {}", error_text(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The error and its causes joined by `: `, like `{:#}`, but without a cause whose text an outer
/// message already includes (errors that show their source, such as `path: io error`, would
/// otherwise print it twice).
fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(verbose: u8, quiet: bool, lists_input_problems: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // delta-rs logs a lost commit race as an error and retries it; keytrail reports what matters
    // itself, so delta-rs and its kernel speak only from -vv on.
    let delta = if verbose >= 2 { default } else { "off" };
    let mut directives =
        format!("{default},deltalake_core={delta},buoyant_kernel={delta},buoyant_kernel_engine={delta}");
    if lists_input_problems && verbose == 0 {
        directives.push_str(",keytrail::convert::input=error");
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose >= 2)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .try_init();
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Convert(args) => run_convert(args, cli.quiet),
        Command::Sql(args) => run_sql(args, cli.quiet),
        Command::Schema(args) => {
            use crate::dataset::ddl;
            use crate::schema::{Schema, docs};
            let schema = Schema::builtin();
            let text = match args.format {
                SchemaFormat::Athena => ddl::athena(schema, &args.table, &args.location),
                SchemaFormat::Spark => ddl::spark(schema, &args.table, &args.location),
                SchemaFormat::Arrow => ddl::arrow_json(schema, &args.partition_by),
                SchemaFormat::Markdown => docs::markdown_table(schema),
            };
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
            Ok(EXIT_OK)
        }
        Command::Upgrade(args) => {
            let runtime = tokio::runtime::Runtime::new()?;
            let upgraded = crate::dataset::upgrade::upgrade(&args.dir, runtime.handle().clone())
                .with_context(|| format!("upgrading {}", args.dir.display()))?;
            let mut stdout = std::io::stdout().lock();
            writeln!(
                stdout,
                "{} is a Delta table now (version {}): {} files, {} rows from {} runs; {} converted inputs recorded for --incremental",
                args.dir.display(),
                upgraded.version,
                summary::thousands(upgraded.files as u64),
                summary::thousands(upgraded.rows),
                upgraded.runs,
                summary::thousands(upgraded.inputs as u64)
            )?;
            Ok(EXIT_OK)
        }
        Command::Compact(args) => operations::run_compact(args),
        Command::Vacuum(args) => operations::run_vacuum(args),
        Command::Info(args) => operations::run_info(args),
        Command::Gen(args) => {
            let options = GenOptions {
                events: args.events,
                seed: args.seed,
                records_per_file: usize::try_from(args.records_per_file).unwrap_or(usize::MAX),
                file_interval_minutes: args.file_interval,
            };
            let summary = crate::synth::generate(&args.output, &options)
                .with_context(|| format!("generating into {}", args.output.display()))?;
            let mut stdout = std::io::stdout().lock();
            writeln!(
                stdout,
                "wrote {} events in {} files ({}) under {}",
                summary::thousands(summary.events),
                summary::thousands(summary.files),
                summary::bytes(summary.bytes),
                args.output.display()
            )?;
            Ok(EXIT_OK)
        }
    }
}

fn run_sql(args: SqlArgs, quiet: bool) -> anyhow::Result<u8> {
    use crate::sql::output::{Format, write_results};
    use crate::sql::shell::{Piped, ShellOptions, Terminal, list_queries, run_shell};
    use crate::sql::{SqlSession, queries};

    if args.list_queries {
        list_queries(&mut std::io::stdout())?;
        return Ok(EXIT_OK);
    }
    let dataset = args.dataset.context("a dataset directory is required")?;
    let format = match (args.format, &args.output) {
        (Some(format), _) => Format::from(format),
        (None, Some(path)) => Format::from_extension(path).unwrap_or(Format::Csv),
        (None, None) if std::io::stdout().is_terminal() => Format::Table,
        (None, None) => Format::Csv,
    };
    if format == Format::Parquet && args.output.is_none() {
        anyhow::bail!("--format parquet needs --output FILE");
    }
    let sql = match (&args.sql, &args.file, &args.query) {
        (Some(sql), _, _) => Some(sql.clone()),
        (_, Some(file), _) => {
            Some(std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?)
        }
        (_, _, Some(name)) => Some(queries::find(name)?.render(&args.params.iter().cloned().collect())?),
        _ => None,
    };
    let session_options = crate::sql::SessionOptions {
        allow_write: args.allow_write,
        raw: crate::sql::raw::RawOptions {
            strict: args.strict,
            delivery_margin: args.delivery_margin.0,
            keep_raw: args.keep_raw,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let session = SqlSession::open_with(&dataset, &session_options).await?;
        let mut out: Box<dyn Write + Send> = match &args.output {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
            )),
            None => Box::new(std::io::stdout()),
        };
        match sql {
            Some(sql) => {
                let statements = session.split(&sql)?;
                if format == Format::Parquet && statements.len() != 1 {
                    anyhow::bail!("--format parquet writes one result: give exactly one statement");
                }
                for statement in statements {
                    let result = match session.execute(statement).await {
                        Ok(stream) => write_results(stream, format, &mut *out, args.max_rows).await,
                        Err(e) => Err(e),
                    };
                    if let Some(summary) = session.take_scan_summary()
                        && !quiet
                    {
                        crate::sql::output::write_scan_summary(&summary, &mut std::io::stderr())?;
                    }
                    result?;
                }
                Ok(if session.input_problems() > 0 {
                    EXIT_PARTIAL
                } else {
                    EXIT_OK
                })
            }
            None => {
                let interactive = std::io::stdin().is_terminal();
                let options = ShellOptions {
                    format,
                    max_rows: args.max_rows,
                    timing: interactive,
                    scan_summaries: !quiet,
                };
                let mut stderr = std::io::stderr();
                let failures = if interactive {
                    eprintln!(
                        "keytrail sql: table `events`, view `kms_events` over {}. \\? for help, \\q to quit.",
                        dataset
                    );
                    run_shell(&session, &mut Terminal::new()?, &mut *out, &mut stderr, &options).await?
                } else {
                    let mut source = Piped(std::io::stdin().lock());
                    run_shell(&session, &mut source, &mut *out, &mut stderr, &options).await?
                };
                Ok(match (failures, session.input_problems()) {
                    (0, 0) => EXIT_OK,
                    (0, _) => EXIT_PARTIAL,
                    _ => EXIT_FAILURE,
                })
            }
        }
    })
}

fn run_convert(args: ConvertArgs, quiet: bool) -> anyhow::Result<u8> {
    let threads = args.threads.map(usize::from).unwrap_or_else(default_threads);
    let options = ConvertOptions {
        inputs: args.inputs,
        output: args.output,
        mode: match (args.overwrite, args.incremental) {
            (true, _) => OutputMode::Overwrite,
            (false, true) => OutputMode::Incremental,
            (false, false) => OutputMode::Fresh,
        },
        threads,
        batch_rows: DEFAULT_BATCH_ROWS,
        strict: args.strict,
        shard: args.shard,
        keep_raw: args.keep_raw,
        shared_input_bytes: crate::convert::DEFAULT_SHARED_INPUT_BYTES,
        write: WriteOptions {
            partitioning: args.partition_by,
            target_file_bytes: args.target_file_size.0,
            memory_limit_bytes: usize::try_from(args.memory_limit.0).unwrap_or(usize::MAX),
            threads,
            spill_compression: args.spill_compression.into(),
            compression: args.compression,
            ..WriteOptions::default()
        },
    };
    let show_progress = match args.progress {
        ProgressMode::On => true,
        ProgressMode::Off => false,
        ProgressMode::Auto => !quiet && std::io::stderr().is_terminal(),
    };
    let bar = progress::Bar::new(show_progress);
    let summary =
        convert(&options, &bar).with_context(|| format!("converting into {}", options.output.display()))?;
    bar.clear();

    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut stdout, &summary)?;
        writeln!(stdout)?;
    } else {
        summary::write_human(&mut stdout, &summary)?;
    }
    stdout.flush()?;
    Ok(if summary.is_clean() { EXIT_OK } else { EXIT_PARTIAL })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("run.json: {source}")]
        struct ShowsItsSource {
            source: std::io::Error,
        }
        let error = anyhow::Error::new(ShowsItsSource {
            source: std::io::Error::other("missing field `state`"),
        })
        .context("converting into out");
        assert_eq!(
            error_text(&error),
            "converting into out: run.json: missing field `state`"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&plain), "outer: inner");
    }

    #[test]
    fn the_defaults_shown_are_the_librarys() {
        let cli = Cli::try_parse_from(["keytrail", "convert", "-o", "out", "in"]).expect("parses");
        let Command::Convert(args) = cli.command else {
            panic!("a convert command")
        };
        let defaults = WriteOptions::default();
        assert_eq!(args.partition_by, defaults.partitioning);
        assert_eq!(args.target_file_size.0, defaults.target_file_bytes);
        assert_eq!(args.memory_limit.0 as usize, defaults.memory_limit_bytes);
        assert_eq!(args.compression, defaults.compression);
        assert_eq!(
            SpillCompression::from(args.spill_compression),
            defaults.spill_compression
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
