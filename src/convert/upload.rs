//! Converting into an `s3://` prefix: the dataset is built in a local staging directory with
//! the usual crash-safe commit, then uploaded, data files first and keytrail's run records last,
//! so a dataset whose run record is present is complete.

use std::path::{Path, PathBuf};

use super::pipeline::convert_local;
use super::{ConvertError, ConvertOptions, ConvertSummary, ProgressSink};
use crate::dataset::OutputMode;
use crate::dataset::layout::{META_DIR, RUNS_DIR};
use crate::store::{S3Url, StoreError, Stores};

/// Writes the dataset into a local staging directory (the same crash-safe commit as a local
/// run), then uploads it: data files first, keytrail's run record last, so a dataset whose run
/// record is present is complete.
pub(super) fn convert_to_s3(
    options: &ConvertOptions,
    url: &S3Url,
    stores: &Stores,
    progress: &dyn ProgressSink,
) -> Result<ConvertSummary, ConvertError> {
    let unsupported = |message: &str| ConvertError::Output {
        output: url.to_string(),
        message: message.to_string(),
    };
    match options.mode {
        OutputMode::Fresh => {}
        OutputMode::Overwrite => {
            return Err(unsupported(
                "--overwrite works on local outputs only; remove the objects under the prefix first, or write to a new prefix",
            ));
        }
        OutputMode::Incremental => {
            return Err(unsupported(
                "--incremental works on local outputs only; convert into a local directory, or write each run to its own prefix",
            ));
        }
    }
    if let Some(key) = stores.first_key(url)? {
        return Err(unsupported(&format!(
            "not empty (it holds s3://{}/{key}); a dataset is only written under an empty prefix",
            url.bucket
        )));
    }
    let staging = tempfile::Builder::new()
        .prefix("keytrail-upload-")
        .tempdir()
        .map_err(|error| StoreError::Local {
            path: std::env::temp_dir().display().to_string(),
            error,
        })?;
    let local_root = staging.path().join("dataset");
    let local_options = ConvertOptions {
        output: local_root.clone(),
        ..options.clone()
    };
    let mut summary = convert_local(&local_options, Some(stores), progress)?;
    let files = upload_order(&local_root)?;
    let sizes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(local_root.join(f)).ok())
        .map(|m| m.len())
        .sum();
    progress.uploading(files.len(), sizes);
    stores.upload(&local_root, url, &files, &|bytes| progress.uploaded(bytes))?;
    summary.output = PathBuf::from(url.to_string());
    if let Some(quarantine) = &summary.quarantine
        && let Ok(relative) = quarantine.strip_prefix(&local_root)
    {
        summary.quarantine = Some(PathBuf::from(url.join(&relative.to_string_lossy()).to_string()));
    }
    Ok(summary)
}

/// The committed dataset's files, relative, in upload order: data, then keytrail's records, then
/// the run records that say the dataset is complete.
fn upload_order(root: &Path) -> Result<Vec<String>, ConvertError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.map_err(|e| StoreError::Local {
            path: e.path().unwrap_or(root).display().to_string(),
            error: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("directory loop")),
        })?;
        if entry.file_type().is_file()
            && let Ok(relative) = entry.path().strip_prefix(root)
        {
            let relative: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.push(relative.join("/"));
        }
    }
    let meta = format!("{META_DIR}/");
    let runs = format!("{meta}{RUNS_DIR}/");
    files.sort_by_key(|f| (f.starts_with(&meta), f.starts_with(&runs), f.clone()));
    Ok(files)
}
