//! Reading a trace file back: everything good up to the first damage, and
//! a clear account of how the file ended.

use std::{fmt, io, path::Path};

use super::format::{self, FORMAT_VERSION, FrameError, Header, MAGIC, PREAMBLE_LEN, Record};
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

/// A trace file, read.
#[derive(Clone, Debug)]
pub struct Trace {
    pub header: Header,
    /// Every good record after the header, in file order.
    pub records: Vec<Record>,
    pub ending: Ending,
}

pub fn read_file(path: &Path) -> Result<Trace, OpenError> {
    let name = path.display().to_string();
    if path.is_dir() {
        return Err(OpenError::Directory { path: name });
    }
    let data = std::fs::read(path).map_err(|source| OpenError::Unreadable {
        path: name.clone(),
        source,
    })?;
    parse(&data, &name)
}

/// Parses a whole trace held in memory; `name` is for messages.
pub fn parse(data: &[u8], name: &str) -> Result<Trace, OpenError> {
    let path = name.to_string();
    if data.is_empty() {
        return Err(OpenError::Empty { path });
    }
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Err(OpenError::NotATrace { path });
    }
    if data.len() < PREAMBLE_LEN {
        return Err(OpenError::BadHeader {
            path,
            reason: "cut inside the preamble".into(),
        });
    }
    let version = u16::from_le_bytes([data[8], data[9]]);
    if version > FORMAT_VERSION {
        return Err(OpenError::NewerVersion {
            path,
            found: version,
        });
    }
    let header = match format::decode(&data[PREAMBLE_LEN..]) {
        Ok((Record::Header(header), _)) => header,
        Ok(_) => {
            return Err(OpenError::BadHeader {
                path,
                reason: "the first record is not a header".into(),
            });
        }
        Err(FrameError::Truncated) => {
            return Err(OpenError::BadHeader {
                path,
                reason: "cut inside it".into(),
            });
        }
        Err(FrameError::Corrupt(reason)) => return Err(OpenError::BadHeader { path, reason }),
    };
    let (_, header_len) = format::decode(&data[PREAMBLE_LEN..]).expect("decoded above");
    let mut offset = PREAMBLE_LEN + header_len;
    let mut records = Vec::new();
    let ending = loop {
        if offset == data.len() {
            break Ending::Unclosed;
        }
        match format::decode(&data[offset..]) {
            Ok((Record::End { events }, len)) => {
                records.push(Record::End { events });
                offset += len;
                break if offset == data.len() {
                    Ending::Clean
                } else {
                    Ending::Corrupt {
                        offset: offset as u64,
                        reason: "data after the closing record".into(),
                    }
                };
            }
            Ok((record, len)) => {
                records.push(record);
                offset += len;
            }
            Err(FrameError::Truncated) => {
                break Ending::Truncated {
                    offset: offset as u64,
                };
            }
            Err(FrameError::Corrupt(reason)) => {
                break Ending::Corrupt {
                    offset: offset as u64,
                    reason,
                };
            }
        }
    };
    Ok(Trace {
        header,
        records,
        ending,
    })
}
