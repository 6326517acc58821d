//! Reading CloudTrail input: finding the files, opening them (gzip sniffed from the magic bytes),
//! and splitting them into records.

pub mod classify;
pub mod discover;
pub mod split;

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

pub use discover::{Discovery, discover};

/// One input: a file or standard input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Input {
    File(PathBuf),
    Stdin,
}

impl Input {
    /// Size on disk, when known.
    pub fn size(&self) -> Option<u64> {
        match self {
            Input::File(path) => std::fs::metadata(path).ok().map(|m| m.len()),
            Input::Stdin => None,
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::File(path) => write!(f, "{}", path.display()),
            Input::Stdin => f.write_str("<stdin>"),
        }
    }
}

/// Errors reading one input.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{input}: {source}")]
    Open { input: String, source: io::Error },
    #[error("{input}: read failed at byte {offset} of the {}: {source}", if *.gzip { "decompressed stream" } else { "file" })]
    Read {
        input: String,
        offset: u64,
        gzip: bool,
        source: io::Error,
    },
}

/// An opened input: a reader over its decompressed bytes.
pub struct Opened {
    pub reader: Box<dyn Read + Send>,
    pub gzip: bool,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Opens an input, transparently decompressing gzip (detected from content, not the name).
pub fn open(input: &Input) -> Result<Opened, ReadError> {
    let raw: Box<dyn Read + Send> = match input {
        Input::File(path) => Box::new(open_file(path).map_err(|source| ReadError::Open {
            input: input.to_string(),
            source,
        })?),
        Input::Stdin => Box::new(io::stdin()),
    };
    sniff(raw).map_err(|source| ReadError::Open {
        input: input.to_string(),
        source,
    })
}

fn open_file(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::other("is a directory"));
    }
    Ok(file)
}

/// Wraps `raw` in a gzip decoder when it starts with the gzip magic bytes.
pub fn sniff(raw: Box<dyn Read + Send>) -> io::Result<Opened> {
    let mut reader = BufReader::with_capacity(256 * 1024, raw);
    let head = io::BufRead::fill_buf(&mut reader)?;
    let gzip = head.starts_with(&GZIP_MAGIC);
    let reader: Box<dyn Read + Send> = if gzip {
        // CloudTrail and `cat a.gz b.gz` both produce multi-member gzip streams.
        Box::new(MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    Ok(Opened { reader, gzip })
}
