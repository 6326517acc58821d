//! Writing query results: a bounded table for people, streaming CSV / JSON / NDJSON / Parquet
//! for everything else.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;

use super::SqlError;

/// Result formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An aligned table (at most --max-rows rows).
    Table,
    Csv,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// Parquet (only with --output).
    Parquet,
}

impl Format {
    /// The format a file name implies.
    pub fn from_extension(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// Streams `stream` to `out` in `format`; returns the number of rows.
///
/// Only the table format holds rows (at most `max_rows`; the rest are counted, not kept).
pub async fn write_results(
    mut stream: SendableRecordBatchStream,
    format: Format,
    out: &mut (dyn Write + Send),
    max_rows: usize,
) -> Result<u64, SqlError> {
    let mut rows = 0u64;
    match format {
        Format::Table => {
            let mut shown = Vec::new();
            let mut kept = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                if kept < max_rows {
                    let take = batch.num_rows().min(max_rows - kept);
                    kept += take;
                    shown.push(batch.slice(0, take));
                }
            }
            if shown.is_empty() {
                shown.push(RecordBatch::new_empty(stream.schema()));
            }
            let options = FormatOptions::default().with_null("NULL");
            let table = arrow::util::pretty::pretty_format_batches_with_options(&shown, &options)?;
            writeln!(out, "{table}").map_err(io)?;
            if rows as usize > kept {
                writeln!(
                    out,
                    "{rows} rows ({kept} shown; use --max-rows or another --format for all)"
                )
                .map_err(io)?;
            } else {
                writeln!(out, "{rows} {}", if rows == 1 { "row" } else { "rows" }).map_err(io)?;
            }
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            while let Some(batch) = stream.next().await {
                let batch = flatten_nested(&batch?)?;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            if rows == 0 {
                // An empty result still names its columns.
                let names: Vec<String> = stream
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                drop(writer);
                writeln!(out, "{}", names.join(",")).map_err(io)?;
            }
        }
        Format::Json => {
            rows = write_json(&mut stream, arrow::json::ArrayWriter::new(&mut *out)).await?;
            if rows == 0 {
                write!(out, "[]").map_err(io)?;
            }
            writeln!(out).map_err(io)?;
        }
        Format::Ndjson => {
            rows = write_json(&mut stream, arrow::json::LineDelimitedWriter::new(&mut *out)).await?;
        }
        Format::Parquet => {
            let schema = super::string_views::without_views(&stream.schema());
            let mut writer = ArrowWriter::try_new(&mut *out, schema.clone(), None)?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows += batch.num_rows() as u64;
                let columns = (batch.columns().iter().zip(schema.fields()))
                    .map(|(column, field)| arrow::compute::cast(column, field.data_type()))
                    .collect::<Result<Vec<_>, _>>()?;
                writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
            }
            writer.close()?;
        }
    }
    out.flush().map_err(io)?;
    Ok(rows)
}

/// Streams every batch through an arrow-json writer (JSON array or NDJSON).
async fn write_json<W: Write, F: arrow::json::writer::JsonFormat>(
    stream: &mut SendableRecordBatchStream,
    mut writer: arrow::json::Writer<W, F>,
) -> Result<u64, SqlError> {
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    writer.finish()?;
    Ok(rows)
}

/// CSV has no nested types: lists, maps and structs are written as their display text.
fn flatten_nested(batch: &RecordBatch) -> Result<RecordBatch, SqlError> {
    let nested = |t: &DataType| {
        matches!(
            t,
            DataType::List(_) | DataType::LargeList(_) | DataType::Map(..) | DataType::Struct(_)
        )
    };
    if !batch.schema().fields().iter().any(|f| nested(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let options = FormatOptions::default();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if nested(field.data_type()) {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let values: StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
                .collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(values));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(ArrowSchema::new(fields)), columns)?)
}

fn io(e: std::io::Error) -> SqlError {
    SqlError::Io(e)
}

/// Problems listed after a query over raw logs (the rest are counted).
const PROBLEMS_SHOWN: usize = 10;

/// Reports what a query over raw logs read, as comment lines for stderr: one line of counts,
/// then the first problems, each naming its input and record.
pub fn write_scan_summary(
    summary: &crate::convert::scan::ScanSummary,
    err: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(err, "-- {summary}")?;
    for problem in summary.problems.iter().take(PROBLEMS_SHOWN) {
        writeln!(err, "-- problem: {problem}")?;
    }
    let more = summary
        .problem_count
        .saturating_sub(PROBLEMS_SHOWN.min(summary.problems.len()) as u64);
    if more > 0 {
        writeln!(
            err,
            "-- and {more} more {}",
            if more == 1 { "problem" } else { "problems" }
        )?;
    }
    Ok(())
}
