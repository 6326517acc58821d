//! The SQL shell: multi-line statements ending in `;`, backslash commands, timing, and errors that
//! keep the session alive. The same loop reads a terminal (with line editing and history) or
//! statements piped on stdin.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::stream;

use super::output::{Format, write_results, write_scan_summary};
use super::{EVENTS_TABLE, SqlError, SqlSession, queries};
use crate::schema::Schema;

/// Where the shell's lines come from.
pub trait LineSource {
    /// The next line, or `None` at end of input.
    fn read_line(&mut self, prompt: &str) -> Result<Option<String>, SqlError>;
    /// Records a finished statement or command in the history.
    fn remember(&mut self, _entry: &str) {}
}

/// A terminal with line editing and a history file.
pub struct Terminal {
    editor: rustyline::DefaultEditor,
    history: Option<std::path::PathBuf>,
}

impl Terminal {
    pub fn new() -> Result<Terminal, SqlError> {
        let mut editor = rustyline::DefaultEditor::new()?;
        let history = std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".keytrail_history"));
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        Ok(Terminal { editor, history })
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(path) = &self.history {
            let _ = self.editor.save_history(path);
        }
    }
}

impl LineSource for Terminal {
    fn read_line(&mut self, prompt: &str) -> Result<Option<String>, SqlError> {
        loop {
            return match self.editor.readline(prompt) {
                Ok(line) => Ok(Some(line)),
                // Ctrl-C abandons the current line, as in psql.
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(rustyline::error::ReadlineError::Eof) => Ok(None),
                Err(rustyline::error::ReadlineError::Io(e)) => Err(SqlError::Io(e)),
                Err(e) => Err(SqlError::Editor(e)),
            };
        }
    }

    fn remember(&mut self, entry: &str) {
        let _ = self.editor.add_history_entry(entry);
    }
}

/// Lines from any reader (stdin when it is not a terminal): no prompts, no history.
pub struct Piped<R: BufRead>(pub R);

impl<R: BufRead> LineSource for Piped<R> {
    fn read_line(&mut self, _prompt: &str) -> Result<Option<String>, SqlError> {
        let mut line = String::new();
        if self.0.read_line(&mut line).map_err(SqlError::Io)? == 0 {
            return Ok(None);
        }
        Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
    }
}

/// Settings of a shell session.
pub struct ShellOptions {
    pub format: Format,
    pub max_rows: usize,
    /// Print each statement's elapsed time on the error stream.
    pub timing: bool,
    /// Print what each statement read from raw logs on the error stream (see
    /// [`super::output::write_scan_summary`]).
    pub scan_summaries: bool,
}

const HELP: &str = "\
Statements end with `;` and may span lines. Commands:
  \\d              list tables and views
  \\d NAME         describe a table or view (columns, types, descriptions)
  \\queries        list the ready-made KMS investigations (run them with `keytrail sql DIR --query NAME`)
  \\?              this help
  \\q              quit (or Ctrl-D)";

/// Runs the shell until `\q` or end of input. Returns how many statements failed.
pub async fn run_shell(
    session: &SqlSession,
    source: &mut dyn LineSource,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    options: &ShellOptions,
) -> Result<u64, SqlError> {
    let mut buffer = String::new();
    let mut failures = 0;
    loop {
        let prompt = if buffer.is_empty() {
            "keytrail> "
        } else {
            "      ... "
        };
        let Some(line) = source.read_line(prompt)? else {
            if !buffer.trim().is_empty() {
                failures += run_statements(session, &buffer, out, err, options).await?;
            }
            break;
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            source.remember(trimmed);
            let mut words = trimmed.split_whitespace();
            match (words.next(), words.next()) {
                (Some("\\q" | "\\quit"), _) => break,
                (Some("\\?" | "\\h" | "\\help"), _) => writeln!(out, "{HELP}").map_err(SqlError::Io)?,
                (Some("\\d"), None) => {
                    failures += run_statements(
                        session,
                        "SELECT table_name, table_type FROM information_schema.tables \
                         WHERE table_schema = 'public' ORDER BY table_name;",
                        out,
                        err,
                        options,
                    )
                    .await?;
                }
                (Some("\\d"), Some(name)) => {
                    if let Err(e) = describe(session, name, out, options).await {
                        failures += 1;
                        writeln!(err, "error: {e}").map_err(SqlError::Io)?;
                    }
                }
                (Some("\\queries"), _) => list_queries(out).map_err(SqlError::Io)?,
                (Some(other), _) => {
                    failures += 1;
                    writeln!(err, "error: unknown command {other} (\\? lists the commands)")
                        .map_err(SqlError::Io)?;
                }
                (None, _) => {}
            }
            continue;
        }
        if buffer.is_empty() && trimmed.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if trimmed.ends_with(';') {
            let statement = std::mem::take(&mut buffer);
            source.remember(statement.trim());
            failures += run_statements(session, &statement, out, err, options).await?;
        }
    }
    Ok(failures)
}

/// Runs every statement of `sql`, printing results or errors; returns the number that failed.
async fn run_statements(
    session: &SqlSession,
    sql: &str,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    options: &ShellOptions,
) -> Result<u64, SqlError> {
    let statements = match session.split(sql) {
        Ok(statements) => statements,
        Err(e) => {
            writeln!(err, "error: {e}").map_err(SqlError::Io)?;
            return Ok(1);
        }
    };
    let mut failures = 0;
    for statement in statements {
        let started = Instant::now();
        let result = match session.execute(statement).await {
            Ok(stream) => write_results(stream, options.format, out, options.max_rows).await,
            Err(e) => Err(e),
        };
        if let Some(summary) = session.take_scan_summary()
            && options.scan_summaries
        {
            write_scan_summary(&summary, err).map_err(SqlError::Io)?;
        }
        match result {
            Ok(rows) if options.timing => {
                let elapsed = started.elapsed().as_secs_f64();
                // The table footer already counts the rows.
                let line = if options.format == Format::Table {
                    format!("Elapsed {elapsed:.3} s")
                } else {
                    format!(
                        "{rows} {} in {elapsed:.3} s",
                        if rows == 1 { "row" } else { "rows" }
                    )
                };
                writeln!(err, "{line}").map_err(SqlError::Io)?;
            }
            Ok(_) => {}
            Err(SqlError::Io(e)) => return Err(SqlError::Io(e)),
            Err(e) => {
                failures += 1;
                writeln!(err, "error: {e}").map_err(SqlError::Io)?;
            }
        }
    }
    Ok(failures)
}

/// `\d NAME`: the columns of a table or view, with the schema file's descriptions.
async fn describe(
    session: &SqlSession,
    name: &str,
    out: &mut (dyn Write + Send),
    options: &ShellOptions,
) -> Result<(), SqlError> {
    let name = name.trim_end_matches(';');
    let table = session
        .context()
        .table_provider(name)
        .await
        .map_err(|_| SqlError::NoTable(name.to_string()))?;
    let schema = table.schema();
    let columns = Schema::builtin().columns();
    let described = |field: &str| -> String {
        if let Some(column) = columns.iter().find(|c| c.name == field) {
            column.description.clone()
        } else if session.partition_columns().iter().any(|p| p == field) {
            format!("partition column (directory `{field}=...` under {EVENTS_TABLE})")
        } else {
            String::new()
        }
    };
    let names: StringArray = schema.fields().iter().map(|f| Some(f.name().clone())).collect();
    let types: StringArray = schema
        .fields()
        .iter()
        .map(|f| Some(f.data_type().to_string()))
        .collect();
    let nullable: StringArray = schema
        .fields()
        .iter()
        .map(|f| Some(if f.is_nullable() { "YES" } else { "NO" }.to_string()))
        .collect();
    let descriptions: StringArray = schema
        .fields()
        .iter()
        .map(|f| Some(described(f.name())))
        .collect();
    let result_schema = Arc::new(ArrowSchema::new(vec![
        Field::new("column", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("nullable", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        result_schema.clone(),
        vec![
            Arc::new(names),
            Arc::new(types),
            Arc::new(nullable),
            Arc::new(descriptions),
        ],
    )?;
    let stream = RecordBatchStreamAdapter::new(result_schema, stream::iter(vec![Ok(batch)]));
    write_results(Box::pin(stream), options.format, out, usize::MAX).await?;
    Ok(())
}

/// Prints the ready-made investigations.
pub fn list_queries(out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    for query in queries::all() {
        writeln!(out, "{}  ({})", query.name, query.file)?;
        writeln!(out, "    {}", query.description)?;
        for param in &query.params {
            let default = match &param.default {
                Some(d) => format!("default {d}"),
                None => "required".to_string(),
            };
            writeln!(
                out,
                "    --param {}=...  {} ({default})",
                param.name, param.description
            )?;
        }
    }
    Ok(())
}
