//! Each stage of `convert` on its own, over a generated delivery file (seeded, KMS-heavy):
//! gunzip, splitting records out of `{"Records":[...]}`, classify + flatten to Arrow, and
//! Parquet encoding with keytrail's writer settings. Throughput is in input bytes of the stage.
//!
//! `cargo bench --bench stages`

use std::io::Read;

use arrow::array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keytrail::flatten::Flattener;
use keytrail::read::classify::{Kind, classify};
use keytrail::read::split::Splitter;
use keytrail::synth::{GenOptions, generate};

const EVENTS: u64 = 20_000;

struct Sample {
    gzip: Vec<u8>,
    json: Vec<u8>,
    batch: RecordBatch,
}

fn sample() -> Sample {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = GenOptions {
        events: EVENTS,
        seed: 1,
        records_per_file: EVENTS as usize,
        ..GenOptions::default()
    };
    generate(dir.path(), &options).expect("generate");
    let file = walkdir::WalkDir::new(dir.path())
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_file())
        .expect("one file");
    let gzip = std::fs::read(file.path()).expect("read");
    let mut json = Vec::new();
    flate2::read::MultiGzDecoder::new(gzip.as_slice())
        .read_to_end(&mut json)
        .expect("gunzip");
    let batch = flatten_all(&json);
    Sample { gzip, json, batch }
}

fn split_all(json: &[u8]) -> usize {
    let mut items = 0;
    let mut splitter = Splitter::new();
    for chunk in json.chunks(256 * 1024) {
        splitter.push(chunk, &mut |_| items += 1).expect("valid input");
    }
    splitter.finish().expect("complete input");
    items
}

fn flatten_all(json: &[u8]) -> RecordBatch {
    let mut flattener = Flattener::new();
    let mut splitter = Splitter::new();
    splitter
        .push(json, &mut |item| {
            if let Ok(Kind::Event(top)) = classify(item.bytes) {
                flattener.append(&top).expect("generated events convert");
            }
        })
        .expect("valid input");
    flattener.finish_batch().expect("batch")
}

fn stages(c: &mut Criterion) {
    let sample = sample();
    let mut group = c.benchmark_group("stages");
    group.sample_size(10);

    group.throughput(Throughput::Bytes(sample.gzip.len() as u64));
    group.bench_function("gunzip", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(sample.json.len());
            flate2::read::MultiGzDecoder::new(sample.gzip.as_slice())
                .read_to_end(&mut out)
                .expect("gunzip");
            out.len()
        })
    });

    group.throughput(Throughput::Bytes(sample.json.len() as u64));
    group.bench_function("split", |b| b.iter(|| split_all(&sample.json)));
    group.bench_function("split_and_parse_raw (floor)", |b| {
        b.iter(|| {
            #[derive(serde::Deserialize)]
            struct Records<'a> {
                #[serde(borrow, rename = "Records")]
                records: Vec<&'a serde_json::value::RawValue>,
            }
            let parsed: Records = serde_json::from_slice(&sample.json).expect("valid");
            parsed.records.len()
        })
    });
    group.bench_function("flatten", |b| b.iter(|| flatten_all(&sample.json).num_rows()));

    let arrow_bytes = sample.batch.get_array_memory_size() as u64;
    group.throughput(Throughput::Bytes(arrow_bytes));
    group.bench_function("parquet_encode", |b| {
        let properties = keytrail::write::parquet_properties(&keytrail::write::WriteOptions::default());
        b.iter(|| {
            let mut out = Vec::new();
            let mut writer = parquet::arrow::ArrowWriter::try_new(
                &mut out,
                sample.batch.schema(),
                Some(properties.clone()),
            )
            .expect("writer");
            writer.write(&sample.batch).expect("write");
            writer.close().expect("close");
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
