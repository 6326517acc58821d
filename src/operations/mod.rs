//! Operations on a table beyond converting into it: [`compact`] (small files into large
//! sorted ones), [`vacuum`] (deleting files no version needs) and [`info`] (what a table holds).
//!
//! Each works on a local directory or an `s3://` table alike, through [`crate::dataset`]'s
//! Delta table and [`crate::write`]'s file writer.

pub mod compact;
pub mod info;
pub mod vacuum;

use crate::dataset::{DatasetError, TableError};
use crate::store::StoreError;
use crate::write::WriteError;

/// Errors of an operation; each names the table or file involved.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    #[error("{0}: no Delta table there")]
    NoTable(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TableError> for OperationError {
    fn from(error: TableError) -> Self {
        OperationError::Dataset(DatasetError::Table(error))
    }
}
