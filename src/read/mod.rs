//! Reading CloudTrail input: finding the files, opening them (gzip sniffed from the magic bytes),
//! and splitting them into records.

pub mod classify;
pub mod discover;
pub(crate) mod json;
pub mod layout;
pub mod split;

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use flate2::read::MultiGzDecoder;
use xxhash_rust::xxh3::Xxh3;

pub use discover::{Discovery, DiscoveryProblem, Pruned, discover, discover_filtered, sort_by_delivery_time};

use crate::store::RemoteObject;

/// One input: a file, an object in S3, standard input, or bytes already in memory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Input {
    File(PathBuf),
    Object(RemoteObject),
    Stdin,
    /// Bytes handed over by a caller (a Python `bytes` object, a Spark `binaryFile` row), read
    /// as a file of that name would be (gzip and zip sniffed).
    Memory(MemoryInput),
}

/// An input's bytes held in memory, with the name problems give it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemoryInput {
    pub name: String,
    pub bytes: bytes::Bytes,
}

impl Input {
    /// Size on disk, when known.
    pub fn size(&self) -> Option<u64> {
        match self {
            Input::File(path) => std::fs::metadata(path).ok().map(|m| m.len()),
            Input::Object(object) => Some(object.size),
            Input::Stdin => None,
            Input::Memory(memory) => Some(memory.bytes.len() as u64),
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::File(path) => write!(f, "{}", path.display()),
            Input::Object(object) => write!(f, "{}", object.url),
            Input::Stdin => f.write_str("<stdin>"),
            Input::Memory(memory) => f.write_str(&memory.name),
        }
    }
}

/// Errors opening one input. (A read that fails later is a problem of that input, reported
/// with the byte it failed at, by the converter that reads it.)
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{input}: {source}")]
    Open { input: String, source: io::Error },
}

/// An opened input: a reader over its decompressed bytes.
pub struct Opened<'a> {
    /// The decompressed bytes; for a zip archive, its bytes as stored.
    pub reader: Box<dyn Read + Send + 'a>,
    pub gzip: bool,
    /// A `.zip` archive (its members are read one by one, not as one stream).
    pub zip: bool,
    /// xxh3-128 of the bytes read from the input as stored (before decompression).
    pub digest: Arc<Mutex<Xxh3>>,
}

/// Hashes the bytes passing through.
struct Hashing<R> {
    inner: R,
    digest: Arc<Mutex<Xxh3>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        crate::sync::lock(&self.digest).update(&buf[..n]);
        Ok(n)
    }
}

/// The hex xxh3-128 digest of a whole file, as recorded in the incremental manifest.
pub fn file_digest(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut digest = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => digest.update(&buf[..n]),
        }
    }
    Ok(format!("{:032x}", digest.digest128()))
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// A zip archive's first local file header, or the end record of an empty archive.
const ZIP_MAGICS: [&[u8]; 2] = [b"PK\x03\x04", b"PK\x05\x06"];

/// Opens an input, transparently decompressing gzip (detected from content, not the name).
pub fn open(input: &Input) -> Result<Opened<'static>, ReadError> {
    let raw: Box<dyn Read + Send> = match input {
        Input::File(path) => Box::new(open_file(path).map_err(|source| ReadError::Open {
            input: input.to_string(),
            source,
        })?),
        Input::Object(object) => object.reader().map_err(|source| ReadError::Open {
            input: input.to_string(),
            source,
        })?,
        Input::Stdin => Box::new(io::stdin()),
        Input::Memory(memory) => Box::new(io::Cursor::new(memory.bytes.clone())),
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

/// Wraps `raw` in a gzip decoder when it starts with the gzip magic bytes; tells a zip archive
/// by its magic bytes.
pub fn sniff<'a>(raw: Box<dyn Read + Send + 'a>) -> io::Result<Opened<'a>> {
    let digest = Arc::new(Mutex::new(Xxh3::new()));
    let hashing = Hashing {
        inner: raw,
        digest: digest.clone(),
    };
    let mut reader = BufReader::with_capacity(256 * 1024, hashing);
    let head = io::BufRead::fill_buf(&mut reader)?;
    let gzip = head.starts_with(&GZIP_MAGIC);
    let zip = ZIP_MAGICS.iter().any(|magic| head.starts_with(magic));
    let reader: Box<dyn Read + Send + 'a> = if gzip {
        // CloudTrail and `cat a.gz b.gz` both produce multi-member gzip streams.
        Box::new(MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    Ok(Opened {
        reader,
        gzip,
        zip,
        digest,
    })
}
