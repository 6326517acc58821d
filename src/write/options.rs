//! Settings of a dataset write: partitioning, file size, memory, threads, compression, and
//! their defaults (which the command line shows and uses too).

use arrow::ipc::CompressionType;

use crate::dataset::Partitioning;

/// Settings of a dataset write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub partitioning: Partitioning,
    /// A file is closed once its encoded size reaches this many bytes.
    pub target_file_bytes: u64,
    /// Buffered Arrow data above this many bytes is sorted and spilled to disk.
    pub memory_limit_bytes: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// Threads that encode Parquet at the end.
    pub threads: usize,
    /// How spilled runs are compressed.
    pub spill_compression: SpillCompression,
    /// How the Parquet files are compressed.
    pub compression: ParquetCompression,
}

/// Compression of the Parquet files' pages: `zstd` (level 1), `zstd(LEVEL)` (1–22), `snappy` or
/// `none`.
///
/// Level 1 is the default: on generated CloudTrail it wrote 2% smaller files than level 3 with 7%
/// less CPU for the whole conversion (benches/README.md).
///
/// ```
/// use keytrail::write::ParquetCompression;
///
/// assert_eq!("zstd".parse(), Ok(ParquetCompression::Zstd(1)));
/// assert_eq!("ZSTD(9)".parse(), Ok(ParquetCompression::Zstd(9)));
/// assert_eq!("snappy".parse::<ParquetCompression>().map(|c| c.to_string()), Ok("snappy".into()));
/// assert!("zstd(23)".parse::<ParquetCompression>().is_err());
/// assert!("gzip".parse::<ParquetCompression>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParquetCompression {
    Zstd(i32),
    Snappy,
    None,
}

impl Default for ParquetCompression {
    fn default() -> Self {
        ParquetCompression::Zstd(1)
    }
}

impl ParquetCompression {
    pub(crate) fn parquet(self) -> parquet::basic::Compression {
        use parquet::basic::{Compression, ZstdLevel};
        match self {
            // The level was checked when parsed; an unchecked one falls back to the default.
            ParquetCompression::Zstd(level) => {
                Compression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default())
            }
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::None => Compression::UNCOMPRESSED,
        }
    }
}

/// A compression name keytrail does not write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    #[error("`{0}`: the zstd level must be a number from 1 to 22")]
    ZstdLevel(String),
    #[error("`{0}` is not a Parquet compression keytrail writes: use zstd, zstd(LEVEL), snappy or none")]
    Unknown(String),
}

impl std::str::FromStr for ParquetCompression {
    type Err = CompressionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        let level = |digits: &str| match digits.parse::<i32>() {
            Ok(level) if (1..=22).contains(&level) => Ok(ParquetCompression::Zstd(level)),
            _ => Err(CompressionError::ZstdLevel(text.to_string())),
        };
        match lower.as_str() {
            "zstd" => Ok(ParquetCompression::default()),
            "snappy" => Ok(ParquetCompression::Snappy),
            "none" | "uncompressed" => Ok(ParquetCompression::None),
            _ => match lower
                .strip_prefix("zstd(")
                .and_then(|rest| rest.strip_suffix(')'))
            {
                Some(digits) => level(digits),
                None => Err(CompressionError::Unknown(text.to_string())),
            },
        }
    }
}

impl std::fmt::Display for ParquetCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParquetCompression::Zstd(level) => write!(f, "zstd({level})"),
            ParquetCompression::Snappy => f.write_str("snappy"),
            ParquetCompression::None => f.write_str("none"),
        }
    }
}

/// Compression of the sorted runs spilled to disk (each Arrow buffer compressed on its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SpillCompression {
    /// Uncompressed Arrow IPC
    None,
    /// LZ4 frames: cheap to write and read, several times smaller
    #[default]
    Lz4,
    /// Zstandard: smaller still, more CPU
    Zstd,
}

impl SpillCompression {
    pub(crate) fn ipc(self) -> Option<CompressionType> {
        match self {
            SpillCompression::None => None,
            SpillCompression::Lz4 => Some(CompressionType::LZ4_FRAME),
            SpillCompression::Zstd => Some(CompressionType::ZSTD),
        }
    }
}

/// The default `--target-file-size`.
pub const DEFAULT_TARGET_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// The default `--memory-limit`. Rows waiting and Parquet row groups being built count against
/// it. Peak RSS was 408-435 MB with 96 MiB on 1M and 5M generated events (batches in flight
/// between workers and writer, the workers' builders); 256 MiB took ~5% less CPU at 674 MB.
pub const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 96 * 1024 * 1024;

/// The default thread count: the number of cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            partitioning: Partitioning::default(),
            target_file_bytes: DEFAULT_TARGET_FILE_BYTES,
            memory_limit_bytes: usize::try_from(DEFAULT_MEMORY_LIMIT_BYTES).unwrap_or(usize::MAX),
            row_group_rows: 128 * 1024,
            threads: default_threads(),
            spill_compression: SpillCompression::default(),
            compression: ParquetCompression::default(),
        }
    }
}

/// A byte size as people write it: `256MiB`, `1GB`, `4096`, `512k` (k/M/G are binary multiples,
/// as are KiB/MiB/GiB); shown in the largest unit that divides it.
///
/// ```
/// use keytrail::write::ByteSize;
///
/// assert_eq!("256MiB".parse(), Ok(ByteSize(256 << 20)));
/// assert_eq!("1g".parse(), Ok(ByteSize(1 << 30)));
/// assert_eq!(ByteSize(96 << 20).to_string(), "96MiB");
/// assert_eq!(ByteSize(1000).to_string(), "1000");
/// assert!("12 parsecs".parse::<ByteSize>().is_err());
/// assert!("0".parse::<ByteSize>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Text that is not a [`ByteSize`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    #[error("`{0}` is not a size such as 256MiB")]
    NotASize(String),
    #[error("unknown size unit `{0}` (use KiB, MiB or GiB)")]
    Unit(String),
    #[error("`{0}` is out of range")]
    OutOfRange(String),
}

impl std::str::FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let number: u64 = text[..digits]
            .parse()
            .map_err(|_| ByteSizeError::NotASize(text.to_string()))?;
        let multiplier: u64 = match text[digits..].trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            other => return Err(ByteSizeError::Unit(other.to_string())),
        };
        number
            .checked_mul(multiplier)
            .filter(|n| *n > 0)
            .map(ByteSize)
            .ok_or_else(|| ByteSizeError::OutOfRange(text.to_string()))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}
