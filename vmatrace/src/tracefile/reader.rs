//! Reading a trace file back: everything good up to the first damage, and
//! a clear account of how the file ended.

use std::{
    fmt,
    fs::File,
    io::{self, BufReader, Read},
    path::Path,
};

use super::format::{
    self, FORMAT_VERSION, FRAME_HEADER_LEN, FRAME_TRAILER_LEN, FrameError, Header, MAGIC,
    MAX_PAYLOAD, PREAMBLE_LEN, Record,
};
use crate::error::{Failure, exit_code};

/// Why a file could not be read as a trace at all.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot read {path}")]
    Unreadable { path: String, source: io::Error },
    #[error("{path} is a directory, not a trace file")]
    Directory { path: String },
    #[error("{path} is empty: not a vmatrace trace")]
    Empty { path: String },
    #[error("{path} is not a vmatrace trace (no VMATRACE magic)")]
    NotATrace { path: String },
    #[error(
        "{path} was written in trace format {found}; this vmatrace reads up to {FORMAT_VERSION}: use a newer vmatrace"
    )]
    NewerVersion { path: String, found: u16 },
    #[error("{path}: the header record is damaged ({reason}): nothing can be read")]
    BadHeader { path: String, reason: String },
}

impl OpenError {
    pub fn exit_code(&self) -> i32 {
        match self {
            OpenError::Unreadable { .. } | OpenError::Directory { .. } => exit_code::UNREADABLE,
            OpenError::Empty { .. } | OpenError::NotATrace { .. } => exit_code::NOT_A_TRACE,
            OpenError::NewerVersion { .. } => exit_code::NEWER_FORMAT,
            OpenError::BadHeader { .. } => exit_code::CORRUPT,
        }
    }
}

impl From<OpenError> for Failure {
    fn from(error: OpenError) -> Failure {
        Failure {
            code: error.exit_code(),
            error: error.into(),
        }
    }
}

/// How the records ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The recorder closed the file properly.
    Clean,
    /// The file ends between two records without the closing record: the
    /// recording is still running, or was killed at a record boundary.
    Unclosed,
    /// The file ends inside a record at `offset` (a kill -9, a full disk).
    Truncated { offset: u64 },
    /// The record at `offset` is damaged; nothing after it is used.
    Corrupt { offset: u64, reason: String },
}

impl Ending {
    /// The exit code a reader ends with after printing what it could.
    pub fn exit_code(&self) -> i32 {
        match self {
            Ending::Clean | Ending::Unclosed => exit_code::OK,
            Ending::Truncated { .. } => exit_code::TRUNCATED,
            Ending::Corrupt { .. } => exit_code::CORRUPT,
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Clean => write!(f, "the recording was closed properly"),
            Ending::Unclosed => write!(
                f,
                "the recording has no closing record (still running, or stopped abruptly between records)"
            ),
            Ending::Truncated { offset } => write!(
                f,
                "the file is cut inside the record at byte {offset}: everything before it was read"
            ),
            Ending::Corrupt { offset, reason } => write!(
                f,
                "the record at byte {offset} is damaged ({reason}): everything before it was read, nothing after"
            ),
        }
    }
}

/// A trace file, read whole (tests, the fuzz target, `export`).
#[derive(Clone, Debug)]
pub struct Trace {
    pub header: Header,
    /// Every good record after the header, in file order.
    pub records: Vec<Record>,
    pub ending: Ending,
}

/// The records after the header, one at a time, from any reader: memory
/// stays the same whatever the file's size. Once it returns `None`,
/// [`Records::ending`] says why.
pub struct Records<R> {
    reader: R,
    /// Byte offset of the next record, for messages.
    offset: u64,
    frame: Vec<u8>,
    ending: Option<Ending>,
}

impl<R: io::Read> Records<R> {
    /// How the records ended; `None` until they have.
    pub fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }

    fn end(&mut self, ending: Ending) -> Option<Record> {
        self.ending = Some(ending);
        None
    }

    /// Reads exactly `len` more bytes into the frame buffer; how many came
    /// if the file ended first.
    fn fill(&mut self, len: usize) -> Result<(), usize> {
        let start = self.frame.len();
        self.frame.resize(start + len, 0);
        let mut got = 0;
        while got < len {
            match self.reader.read(&mut self.frame[start + got..]) {
                Ok(0) => return Err(got),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(got),
            }
        }
        Ok(())
    }
}

impl<R: io::Read> Iterator for Records<R> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.ending.is_some() {
            return None;
        }
        let offset = self.offset;
        self.frame.clear();
        match self.fill(FRAME_HEADER_LEN) {
            Ok(()) => {}
            Err(0) => return self.end(Ending::Unclosed),
            Err(_) => return self.end(Ending::Truncated { offset }),
        }
        let len = u32::from_le_bytes(self.frame[4..8].try_into().expect("4 bytes"));
        if len > MAX_PAYLOAD {
            // decode says why, without reading the rest.
            let Err(FrameError::Corrupt(reason)) = format::decode(&self.frame) else {
                unreachable!("an oversized length is corrupt");
            };
            return self.end(Ending::Corrupt { offset, reason });
        }
        if self.fill(len as usize + FRAME_TRAILER_LEN).is_err() {
            return self.end(Ending::Truncated { offset });
        }
        self.offset += self.frame.len() as u64;
        match format::decode(&self.frame) {
            Ok((Record::End { events }, _)) => {
                // Anything after the closing record is damage.
                let mut probe = [0u8; 1];
                let ending = match self.reader.read(&mut probe) {
                    Ok(0) => Ending::Clean,
                    _ => Ending::Corrupt {
                        offset: self.offset,
                        reason: "data after the closing record".into(),
                    },
                };
                self.ending = Some(ending);
                Some(Record::End { events })
            }
            Ok((record, _)) => Some(record),
            Err(FrameError::Truncated) => self.end(Ending::Truncated { offset }),
            Err(FrameError::Corrupt(reason)) => self.end(Ending::Corrupt { offset, reason }),
        }
    }
}

/// Opens a trace file for reading record by record: its header, and the
/// records after it.
pub fn open(path: &Path) -> Result<(Header, Records<BufReader<File>>), OpenError> {
    let name = path.display().to_string();
    if path.is_dir() {
        return Err(OpenError::Directory { path: name });
    }
    let file = File::open(path).map_err(|source| OpenError::Unreadable {
        path: name.clone(),
        source,
    })?;
    start(BufReader::with_capacity(1 << 20, file), &name)
}

/// Reads a whole trace file.
pub fn read_file(path: &Path) -> Result<Trace, OpenError> {
    let (header, records) = open(path)?;
    Ok(collect(header, records))
}

/// Parses a whole trace held in memory; `name` is for messages.
pub fn parse(data: &[u8], name: &str) -> Result<Trace, OpenError> {
    let (header, records) = start(data, name)?;
    Ok(collect(header, records))
}

fn collect<R: io::Read>(header: Header, mut records: Records<R>) -> Trace {
    let all = records.by_ref().collect();
    Trace {
        header,
        records: all,
        ending: records.ending.unwrap_or(Ending::Unclosed),
    }
}

/// Reads the preamble and the header record, checking that this is a
/// trace this vmatrace can read.
fn start<R: io::Read>(mut reader: R, name: &str) -> Result<(Header, Records<R>), OpenError> {
    let path = name.to_string();
    let mut preamble = Vec::with_capacity(PREAMBLE_LEN);
    (&mut reader)
        .take(PREAMBLE_LEN as u64)
        .read_to_end(&mut preamble)
        .map_err(|source| OpenError::Unreadable {
            path: path.clone(),
            source,
        })?;
    if preamble.is_empty() {
        return Err(OpenError::Empty { path });
    }
    if preamble.len() < MAGIC.len() || &preamble[..MAGIC.len()] != MAGIC {
        return Err(OpenError::NotATrace { path });
    }
    if preamble.len() < PREAMBLE_LEN {
        return Err(OpenError::BadHeader {
            path,
            reason: "cut inside the preamble".into(),
        });
    }
    let version = u16::from_le_bytes([preamble[8], preamble[9]]);
    if version > FORMAT_VERSION {
        return Err(OpenError::NewerVersion {
            path,
            found: version,
        });
    }
    let mut records = Records {
        reader,
        offset: PREAMBLE_LEN as u64,
        frame: Vec::new(),
        ending: None,
    };
    let header = match records.next() {
        Some(Record::Header(header)) => header,
        Some(_) => {
            return Err(OpenError::BadHeader {
                path,
                reason: "the first record is not a header".into(),
            });
        }
        None => {
            let reason = match records.ending {
                Some(Ending::Corrupt { reason, .. }) => reason,
                _ => "cut inside it".into(),
            };
            return Err(OpenError::BadHeader { path, reason });
        }
    };
    Ok((header, records))
}
