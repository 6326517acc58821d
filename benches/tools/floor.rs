//! The parse floor of a conversion, for `benches/e2e.py`: how fast this machine can decompress a
//! CloudTrail delivery tree (`--mode gunzip`), and decompress + split every Records array into
//! records with serde_json (`--mode split`: `Vec<&RawValue>`, a full syntax check that builds no
//! values), with the same thread count as the conversion it is compared with.
//!
//! usage: keytrail-floor DIR --mode gunzip|split [--threads N]
//! prints one JSON object: files, compressed and decompressed bytes, records, seconds.
//!
//! Built only with `--features bench-tools` (it is a measuring tool, not part of keytrail).

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use flate2::read::MultiGzDecoder;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Delivery<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<&'a RawValue>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Gunzip,
    Split,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut mode = None;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mode" => {
                mode = Some(match args.next().as_deref() {
                    Some("gunzip") => Mode::Gunzip,
                    Some("split") => Mode::Split,
                    other => bail!("--mode gunzip|split, not {other:?}"),
                })
            }
            "--threads" => threads = args.next().context("--threads N")?.parse()?,
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            other => bail!("unexpected argument {other}"),
        }
    }
    let dir = dir.context("usage: keytrail-floor DIR --mode gunzip|split [--threads N]")?;
    let mode = mode.context("--mode gunzip|split is required")?;
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    files.sort();

    let next = AtomicUsize::new(0);
    let compressed = AtomicU64::new(0);
    let decompressed = AtomicU64::new(0);
    let records = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    let mut buffer = Vec::new();
                    while let Some(path) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let raw = std::fs::read(path).with_context(|| path.display().to_string())?;
                        compressed.fetch_add(raw.len() as u64, Ordering::Relaxed);
                        buffer.clear();
                        MultiGzDecoder::new(&raw[..])
                            .read_to_end(&mut buffer)
                            .with_context(|| path.display().to_string())?;
                        decompressed.fetch_add(buffer.len() as u64, Ordering::Relaxed);
                        if mode == Mode::Split {
                            let delivery: Delivery = serde_json::from_slice(&buffer)
                                .with_context(|| path.display().to_string())?;
                            records.fetch_add(delivery.records.len() as u64, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("no panic")?;
        }
        Ok(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "mode": if mode == Mode::Gunzip { "gunzip" } else { "split" },
            "threads": threads,
            "files": files.len(),
            "compressed_bytes": compressed.into_inner(),
            "decompressed_bytes": decompressed.into_inner(),
            "records": records.into_inner(),
            "seconds": seconds,
        })
    );
    Ok(())
}
