//! Runs the `.slt` files in tests/sql against the real fixtures (Invictus and the KMS developer
//! guide examples) twice, through `keytrail::sql::SqlSession`: converted into a table, and read
//! raw by each query. Both must give the same answers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::TryStreamExt;
use keytrail::convert::{ConvertOptions, NoProgress, convert};
use keytrail::sql::{SessionOptions, SqlError, SqlSession};
use sqllogictest::{DBOutput, DefaultColumnType};

struct KeytrailDb {
    session: SqlSession,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for KeytrailDb {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let mut output = DBOutput::StatementComplete(0);
        for statement in self.session.split(sql)? {
            let stream = self.session.execute(statement).await?;
            let schema = stream.schema();
            let batches: Vec<RecordBatch> = stream.try_collect().await?;
            let types = schema
                .fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect();
            let mut rows = Vec::new();
            for batch in &batches {
                rows.extend(format_rows(batch)?);
            }
            output = DBOutput::Rows { types, rows };
        }
        Ok(output)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "keytrail"
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    match data_type {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

fn format_rows(batch: &RecordBatch) -> Result<Vec<Vec<String>>, SqlError> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(SqlError::from)?;
    Ok((0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .zip(batch.columns())
                .map(|(f, column)| match f.value(row).to_string() {
                    // sqllogictest's convention for empty strings.
                    s if s.is_empty() && column.is_valid(row) => "(empty)".to_string(),
                    s => s,
                })
                .collect()
        })
        .collect())
}

fn fixture(relative: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(relative)
        .to_string_lossy()
        .into_owned()
}

fn main() -> ExitCode {
    let dir = tempfile::tempdir().expect("temp dir");
    let dataset = dir.path().join("dataset");
    let mut options = ConvertOptions::new(
        vec![fixture("invictus"), fixture("aws-kms-developer-guide/events")],
        &dataset,
    );
    options.threads = 2;
    let summary = convert(&options, &NoProgress).expect("fixtures convert");
    assert_eq!(
        summary.rows_written,
        2900 + 71,
        "the .slt expectations assume these fixtures"
    );

    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql"))
        .expect("tests/sql")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            filter
                .as_ref()
                .is_none_or(|f| p.to_string_lossy().contains(f.as_str()))
        })
        .collect();
    files.sort();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let raw_inputs = vec![fixture("invictus"), fixture("aws-kms-developer-guide/events")];
    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        for raw in [false, true] {
            let dataset = dataset.clone();
            let raw_inputs = raw_inputs.clone();
            let mut runner = sqllogictest::Runner::new(move || {
                let dataset = dataset.clone();
                let raw_inputs = raw_inputs.clone();
                async move {
                    let session = if raw {
                        SqlSession::open_raw_inputs(raw_inputs, &SessionOptions::default()).await?
                    } else {
                        SqlSession::open(&dataset, false).await?
                    };
                    Ok(KeytrailDb { session })
                }
            });
            let over = if raw { "raw logs" } else { "converted" };
            match runtime.block_on(runner.run_file_async(file)) {
                Ok(()) => {
                    passed += 1;
                    println!("ok      {} ({over})", file.display());
                }
                Err(e) => {
                    failed += 1;
                    println!("FAILED  {} ({over})\n{e}", file.display());
                }
            }
        }
    }
    println!("sqllogictest: {passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
