//! keytrail turns AWS CloudTrail logs, with first-class care for KMS key events, into
//! Hive-partitioned Parquet.
//!
//! The data path: [`read`] finds inputs and splits them into records, [`flatten`] turns records
//! into Arrow batches following the [`schema`], [`write`] partitions, sorts and writes Parquet, and
//! [`convert`] runs the whole job on all cores. [`store`] reads and writes `s3://` locations.

pub mod cli;
pub mod convert;
pub mod flatten;
pub mod read;
pub mod schema;
pub mod sql;
pub mod store;
pub mod synth;
pub mod write;
