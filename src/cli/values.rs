//! The command line's names for library choices: clap's `ValueEnum` lives here, the library's
//! types stay free of clap.

use clap::ValueEnum;

use crate::sql::output::Format;
use crate::write::SpillCompression;

/// `--spill-compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum SpillCodec {
    /// Uncompressed Arrow IPC
    None,
    /// LZ4 frames: cheap to write and read, several times smaller
    Lz4,
    /// Zstandard: smaller still, more CPU
    Zstd,
}

impl From<SpillCompression> for SpillCodec {
    fn from(compression: SpillCompression) -> Self {
        match compression {
            SpillCompression::None => SpillCodec::None,
            SpillCompression::Lz4 => SpillCodec::Lz4,
            SpillCompression::Zstd => SpillCodec::Zstd,
        }
    }
}

impl From<SpillCodec> for SpillCompression {
    fn from(codec: SpillCodec) -> Self {
        match codec {
            SpillCodec::None => SpillCompression::None,
            SpillCodec::Lz4 => SpillCompression::Lz4,
            SpillCodec::Zstd => SpillCompression::Zstd,
        }
    }
}

/// `keytrail sql --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum ResultFormat {
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

impl From<ResultFormat> for Format {
    fn from(format: ResultFormat) -> Self {
        match format {
            ResultFormat::Table => Format::Table,
            ResultFormat::Csv => Format::Csv,
            ResultFormat::Json => Format::Json,
            ResultFormat::Ndjson => Format::Ndjson,
            ResultFormat::Parquet => Format::Parquet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spill_codec_round_trips() {
        for codec in SpillCodec::value_variants() {
            assert_eq!(SpillCodec::from(SpillCompression::from(*codec)), *codec);
        }
        assert_eq!(
            SpillCodec::from(SpillCompression::default()),
            SpillCodec::Lz4,
            "the default shown by --help is the library's"
        );
    }
}
