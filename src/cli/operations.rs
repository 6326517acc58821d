//! The `compact`, `vacuum` and `info` commands: run the operation, print its summary (text, or
//! JSON with `--json`).

use std::io::Write;

use anyhow::Context;

use super::summary::{bytes, thousands};
use super::{CompactArgs, EXIT_OK, InfoArgs, VacuumArgs};
use crate::operations::{compact, info, vacuum};
use crate::write::WriteOptions;

pub(super) fn run_compact(args: CompactArgs) -> anyhow::Result<u8> {
    let options = compact::CompactOptions {
        target_file_bytes: args.target_file_size.0,
        min_files: usize::from(args.min_files),
        partitions: args.partition,
        write: WriteOptions {
            memory_limit_bytes: usize::try_from(args.memory_limit.0).unwrap_or(usize::MAX),
            ..WriteOptions::default()
        },
    };
    let summary = compact::compact(&args.table, &options)
        .with_context(|| format!("compacting {}", args.table.display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
        return Ok(EXIT_OK);
    }
    match summary.version {
        None if summary.skipped.is_empty() => writeln!(
            out,
            "{}: nothing to compact (no partition holds {} or more files smaller than the target size)",
            summary.table, options.min_files
        )?,
        _ => {
            let before: usize = summary.compacted.iter().map(|p| p.files_before).sum();
            let after: usize = summary.compacted.iter().map(|p| p.files_after).sum();
            let rows: u64 = summary.compacted.iter().map(|p| p.rows).sum();
            writeln!(
                out,
                "{}: compacted {} partitions, {} files into {} ({} rows, {} read) in {:.1} s{}",
                summary.table,
                summary.compacted.len(),
                thousands(before as u64),
                thousands(after as u64),
                thousands(rows),
                bytes(summary.bytes_read),
                summary.seconds,
                summary
                    .version
                    .map_or(String::new(), |v| format!("; table version {v}")),
            )?;
            for partition in &summary.skipped {
                writeln!(
                    out,
                    "  skipped {partition}: another writer changed it meanwhile; run compact again"
                )?;
            }
        }
    }
    Ok(EXIT_OK)
}

pub(super) fn run_vacuum(args: VacuumArgs) -> anyhow::Result<u8> {
    let summary = vacuum::vacuum(&args.table, args.retain, args.dry_run)
        .with_context(|| format!("vacuuming {}", args.table.display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
        return Ok(EXIT_OK);
    }
    let verb = if summary.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    writeln!(
        out,
        "{}: {verb} {} files unreferenced for more than {}",
        summary.table,
        thousands(summary.files.len() as u64),
        humantime::format_duration(args.retain)
    )?;
    for file in &summary.files {
        writeln!(out, "  {file}")?;
    }
    Ok(EXIT_OK)
}

pub(super) fn run_info(args: InfoArgs) -> anyhow::Result<u8> {
    let table =
        info::info(&args.table, args.last).with_context(|| format!("reading {}", args.table.display()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &table)?;
        writeln!(out)?;
        return Ok(EXIT_OK);
    }
    writeln!(out, "table        {}", table.table)?;
    writeln!(
        out,
        "version      {}",
        table.version.map_or("-".to_string(), |v| v.to_string())
    )?;
    writeln!(
        out,
        "schema       {} version {}",
        table.schema.as_deref().unwrap_or("(not keytrail)"),
        table.schema_version.map_or("-".to_string(), |v| v.to_string())
    )?;
    writeln!(out, "partitioned  by {}", table.partition_by.join(", "))?;
    writeln!(
        out,
        "data         {} rows in {} files, {} ({} partitions)",
        thousands(table.rows),
        thousands(table.files as u64),
        bytes(table.bytes),
        thousands(table.partitions.len() as u64)
    )?;
    writeln!(
        out,
        "small files  {} under {}; {} partitions hold two or more{}",
        thousands(table.small_files as u64),
        bytes(info::SMALL_FILE_BYTES),
        thousands(table.compactable_partitions as u64),
        if table.compactable_partitions > 0 {
            " (`keytrail compact` merges them)"
        } else {
            ""
        }
    )?;
    if !table.last_commits.is_empty() {
        writeln!(out, "last commits")?;
        for commit in &table.last_commits {
            let what = match (&commit.run_id, commit.inputs, commit.rows) {
                (Some(run), Some(inputs), Some(rows)) => {
                    format!(
                        "run {run}: {} inputs, {} rows",
                        thousands(inputs as u64),
                        thousands(rows)
                    )
                }
                (Some(run), _, _) => format!("run {run}"),
                _ => String::new(),
            };
            writeln!(
                out,
                "  {:>6}  {}  {:<14} {what}",
                commit.version,
                commit.time.as_deref().unwrap_or("-"),
                commit.operation.as_deref().unwrap_or("-"),
            )?;
        }
    }
    Ok(EXIT_OK)
}
