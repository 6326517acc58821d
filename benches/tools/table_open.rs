//! How long a table with many commits takes to open, for `benches/README.md`: builds a local
//! keytrail table of N hourly-sized commits (one file and one input each, through the library's
//! own commit path, so delta-rs writes its checkpoint every 100 commits), then measures
//!
//! - opening the table (delta-rs loads the snapshot): with its checkpoints, and after deleting
//!   them (every JSON commit replayed);
//! - reading the converted inputs as `--incremental` does: from one copy per commit, then from
//!   the snapshot the first read rolls them up into.
//!
//! usage: keytrail-table-open DIR [--commits N] [--repeat R]
//! prints one JSON object with the medians in milliseconds.
//!
//! Built only with `--features bench-tools` (it is a measuring tool, not part of keytrail).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use keytrail::dataset::manifest::{self, CommitRecord};
use keytrail::dataset::table::{CommitOutcome, PublishedFile};
use keytrail::dataset::{DataFile, InputRecord, Partitioning, Table, TableLocation};
use keytrail::schema::Schema;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut commits: u64 = 10_000;
    let mut repeat = 5;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--commits" => commits = args.next().context("--commits N")?.parse()?,
            "--repeat" => repeat = args.next().context("--repeat R")?.parse()?,
            other if dir.is_none() => dir = Some(PathBuf::from(other)),
            other => bail!("unexpected argument {other}"),
        }
    }
    let dir = dir.context("usage: keytrail-table-open DIR [--commits N] [--repeat R]")?;
    if dir.exists() {
        bail!("{}: choose a new directory", dir.display());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    build(&dir, commits, runtime.handle())?;
    let build_seconds = started.elapsed().as_secs_f64();

    let open = |dir: &Path| -> anyhow::Result<f64> {
        let started = Instant::now();
        let table = Table::open(TableLocation::local(dir)?, runtime.handle().clone())?;
        anyhow::ensure!(
            table.version() == Some(commits),
            "opened at {:?}",
            table.version()
        );
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    let inputs = |dir: &Path| -> anyhow::Result<f64> {
        let table = Table::open(TableLocation::local(dir)?, runtime.handle().clone())?;
        let started = Instant::now();
        let converted = manifest::converted_inputs(&table)?;
        anyhow::ensure!(converted.len() as u64 == commits, "{} inputs", converted.len());
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    // The first read of the converted inputs reads every copy, then rolls them up.
    let inputs_from_copies = inputs(&dir)?;
    let inputs_from_snapshot = median((0..repeat).map(|_| inputs(&dir)).collect::<Result<_, _>>()?);
    let open_with_checkpoints = median((0..repeat).map(|_| open(&dir)).collect::<Result<_, _>>()?);
    let log = dir.join("_delta_log");
    let mut checkpoints = 0;
    for entry in std::fs::read_dir(&log)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains(".checkpoint.") || name == "_last_checkpoint" {
            std::fs::remove_file(&path)?;
            checkpoints += usize::from(name != "_last_checkpoint");
        }
    }
    let open_without_checkpoints = median((0..repeat).map(|_| open(&dir)).collect::<Result<_, _>>()?);
    println!(
        "{}",
        serde_json::json!({
            "commits": commits,
            "checkpoints": checkpoints,
            "build_seconds": build_seconds,
            "open_ms_with_checkpoints": open_with_checkpoints,
            "open_ms_without_checkpoints": open_without_checkpoints,
            "converted_inputs_ms_from_copies": inputs_from_copies,
            "converted_inputs_ms_from_snapshot": inputs_from_snapshot,
        })
    );
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A table of `commits` keytrail commits, each adding one (absent) file of one partition and
/// recording one input, with a copy of each record as a run keeps it.
fn build(dir: &Path, commits: u64, runtime: &tokio::runtime::Handle) -> anyhow::Result<()> {
    let partitioning: Partitioning = "region,event_date".parse()?;
    let mut table = Table::open(TableLocation::local(dir)?, runtime.clone())?;
    table.create(&Schema::builtin().arrow_schema(), &partitioning)?;
    for n in 1..=commits {
        let partition = format!(
            "region=us-east-1/event_date=2026-{:02}-{:02}",
            1 + n / 720 % 12,
            1 + n / 24 % 28
        );
        let file = DataFile {
            path: format!("{partition}/part-{n:08}-00000.parquet"),
            rows: 100,
            bytes: 20_000,
            stats: None,
        };
        let published = PublishedFile {
            partition_values: keytrail::dataset::partitioning::partition_values(&file.path, &partitioning),
            file,
        };
        let record = CommitRecord {
            run_id: format!("bench-{n:08}"),
            sequence: 0,
            replaces: false,
            rows: 100,
            writer: "keytrail-table-open".into(),
            inputs: vec![InputRecord {
                path: format!(
                    "s3://trail/AWSLogs/111122223333/CloudTrail/us-east-1/2026/01/01/file-{n:08}.json.gz"
                ),
                size: 4_000,
                modified: Some(i128::from(n) * 3_600_000_000_000),
                etag: Some(format!("\"{n:032x}\"")),
                hash: format!("{n:032x}"),
            }],
        };
        match table.commit(&[published], record, false, None)? {
            CommitOutcome::Committed { version, record } => manifest::keep_copy(&table, version, &record)?,
            CommitOutcome::InputsTaken(_) => bail!("another writer committed to {}", dir.display()),
        }
        table.reload()?;
    }
    Ok(())
}
