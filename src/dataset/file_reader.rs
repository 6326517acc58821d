//! Reading some columns of one of a table's data files, from local disk or an object store: an
//! `s3://` table's file is read with the Parquet footer and ranged `GET`s of just the wanted
//! column chunks (parquet's object-store reader), never downloaded whole.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use std::ops::Range;

use arrow::array::RecordBatch;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use tokio::runtime::Handle;

use super::table::TableLocation;

#[derive(Clone)]
enum Source {
    Local(std::path::PathBuf),
    Remote {
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
        size: u64,
        runtime: Handle,
    },
}

/// The batches a [`TableFileReader`] yields.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ParquetError>> + Send>;

/// One data file of a table.
#[derive(Clone)]
pub struct TableFileReader {
    source: Source,
    /// The path or URL, for messages.
    name: String,
}

impl TableFileReader {
    /// A local file.
    pub fn local(path: &Path) -> TableFileReader {
        TableFileReader {
            source: Source::Local(path.to_path_buf()),
            name: path.display().to_string(),
        }
    }

    /// The file `relative` (of `size` bytes, as the Delta log says) of the table at `location`,
    /// read through `runtime`.
    pub fn remote(location: &TableLocation, relative: &str, size: u64, runtime: Handle) -> TableFileReader {
        TableFileReader {
            source: Source::Remote {
                store: location.store(),
                path: ObjectPath::from(relative),
                size,
                runtime,
            },
            name: format!("{location}/{relative}"),
        }
    }

    /// The file's path or URL.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's rows, with only the top-level `columns` the file has (all with `None`).
    pub fn batches(&self, columns: Option<&[&str]>) -> Result<Batches, ParquetError> {
        match &self.source {
            Source::Local(path) => {
                let file = File::open(path).map_err(|e| ParquetError::External(Box::new(e)))?;
                let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
                if let Some(columns) = columns {
                    let mask = projection(builder.parquet_schema(), builder.schema(), columns);
                    builder = builder.with_projection(mask);
                }
                let reader = builder.build()?;
                Ok(Box::new(reader.map(|batch| batch.map_err(ParquetError::from))))
            }
            Source::Remote {
                store,
                path,
                size,
                runtime,
            } => {
                let reader = ObjectReader {
                    store: store.clone(),
                    path: path.clone(),
                    size: *size,
                };
                let mut builder = runtime.block_on(ParquetRecordBatchStreamBuilder::new(reader))?;
                if let Some(columns) = columns {
                    let mask = projection(builder.parquet_schema(), builder.schema(), columns);
                    builder = builder.with_projection(mask);
                }
                let mut stream = builder.build()?;
                let runtime = runtime.clone();
                Ok(Box::new(std::iter::from_fn(move || {
                    runtime.block_on(stream.next())
                })))
            }
        }
    }
}

fn projection(
    parquet_schema: &parquet::schema::types::SchemaDescriptor,
    arrow_schema: &arrow::datatypes::Schema,
    columns: &[&str],
) -> ProjectionMask {
    let wanted = columns.iter().filter_map(|name| arrow_schema.index_of(name).ok());
    ProjectionMask::roots(parquet_schema, wanted)
}

/// Ranged reads of one object; the size comes from the Delta log, so the footer is one `GET`.
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
}

fn external(error: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(error))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(external) }.boxed()
    }

    /// Nearby ranges are fetched together (object_store coalesces them).
    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(external) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
