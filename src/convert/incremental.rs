//! `--incremental`: setting aside the inputs an earlier run converted unchanged, and the
//! manifest entry each input gets.

use crate::dataset::{DatasetError, InputRecord, OutputDir};
use crate::read::Input;

/// The inputs a run converts, after `--incremental` has set aside those already converted.
pub(super) struct Selection {
    pub(super) inputs: Vec<Input>,
    /// Inputs skipped because an earlier run converted them unchanged.
    pub(super) unchanged: u64,
    /// Inputs converted before whose content has changed since.
    pub(super) changed: Vec<String>,
}

pub(super) fn select_inputs(inputs: Vec<Input>, output: &OutputDir) -> Result<Selection, DatasetError> {
    let converted = output.converted_inputs()?;
    let mut selection = Selection {
        inputs: Vec::with_capacity(inputs.len()),
        unchanged: 0,
        changed: Vec::new(),
    };
    for input in inputs {
        let Some(current) = manifest_entry(&input) else {
            selection.inputs.push(input);
            continue;
        };
        let Some(before) = converted.get(&current.path) else {
            selection.inputs.push(input);
            continue;
        };
        let unchanged = before.same_metadata(&current)
            || match &input {
                // Touched but not changed. Objects are not compared by content: that would mean
                // downloading them twice.
                Input::File(path) => crate::read::file_digest(path).is_ok_and(|hash| hash == before.hash),
                Input::Object(_) | Input::Stdin | Input::Memory(_) => false,
            };
        if unchanged {
            selection.unchanged += 1;
        } else {
            selection.changed.push(input.to_string());
            selection.inputs.push(input);
        }
    }
    Ok(selection)
}

/// The manifest entry of an input before it is read (the hash is filled in once it has been):
/// a file's absolute path, size and modification time, or an object's URL, size and
/// modification time; none for stdin.
pub(super) fn manifest_entry(input: &Input) -> Option<InputRecord> {
    match input {
        Input::File(path) => file_manifest_entry(path),
        Input::Object(object) => Some(InputRecord {
            path: object.url.to_string(),
            size: object.size,
            modified: object.modified,
            etag: object.etag.clone(),
            hash: String::new(),
        }),
        Input::Stdin | Input::Memory(_) => None,
    }
}

fn file_manifest_entry(path: &std::path::Path) -> Option<InputRecord> {
    let absolute = std::fs::canonicalize(path).ok()?;
    let metadata = std::fs::metadata(&absolute).ok()?;
    let modified = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128);
    Some(InputRecord {
        path: absolute.to_string_lossy().into_owned(),
        size: metadata.len(),
        modified,
        etag: None,
        hash: String::new(),
    })
}
