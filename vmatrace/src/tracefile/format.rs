//! The trace file format (docs/trace-format.md): a preamble, then framed
//! records. Everything little-endian. Each frame is
//! `kind: u8, 0: [u8; 3], len: u32, payload: [u8; len], crc32: u32`, the
//! checksum covering kind, padding, len and payload, so a file cut at any
//! byte, or damaged anywhere, reads back up to its last good record.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use vmatrace_common::{EVENT_SIZE, Event};

pub use crate::model::snapshot::ProcessInfo;
use crate::stacks::symbols::{Frame, Stack};

pub const MAGIC: &[u8; 8] = b"VMATRACE";
/// 2 added the Mapping record; version 1 files read the same otherwise.
/// 4: `Limit` records. 5: Event records of kind 5 (a change of the count
/// outside a traced call) and calls 15 to 23 (mbind to process_madvise).
pub const FORMAT_VERSION: u16 = 5;
/// Magic and version, then two reserved bytes.
pub const PREAMBLE_LEN: usize = 12;
pub const FRAME_HEADER_LEN: usize = 8;
pub const FRAME_TRAILER_LEN: usize = 4;
/// No record is larger: a length field beyond it is damage, and the reader
/// never allocates for it.
pub const MAX_PAYLOAD: u32 = 16 << 20;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Header = 1,
    Process = 2,
    Event = 3,
    Lost = 4,
    Checkpoint = 5,
    End = 6,
    Stack = 7,
    Mapping = 8,
    Limit = 9,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Header,
            2 => Kind::Process,
            3 => Kind::Event,
            4 => Kind::Lost,
            5 => Kind::Checkpoint,
            6 => Kind::End,
            7 => Kind::Stack,
            8 => Kind::Mapping,
            9 => Kind::Limit,
            _ => return None,
        })
    }
}

/// What a reader needs to make sense of the records.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    pub tool_version: String,
    pub hostname: String,
    pub kernel_release: String,
    pub max_map_count: u64,
    /// The NEAR-LIMIT threshold the recording used, in VMAs.
    pub warn_at: u64,
    /// Unix-epoch ns minus CLOCK_MONOTONIC ns: add it to an event time to
    /// get wall-clock time.
    pub clock_offset_ns: i64,
    /// When recording started, CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    /// The BTF offsets the programs used.
    pub task_mm_offset: u64,
    pub mm_map_count_offset: u64,
    /// The command line vmatrace ran with.
    pub command_line: String,
}

/// Lost-event totals so far, by reason (see `probes::LostCounts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LostRecord {
    pub at_ns: u64,
    pub ring_buffer_full: u64,
    pub inflight_table_full: u64,
    pub targets_table_full: u64,
    pub lifecycle_ring_buffer_full: u64,
    /// Events the recorder could not write in time (its queue was full).
    pub recorder_queue_full: u64,
    /// Traced calls whose entry or exit the kernel skipped (format 3).
    pub unpaired_calls: u64,
    /// Runs of vmatrace's programs the kernel skipped (format 3).
    pub kernel_skipped_runs: u64,
}

impl LostRecord {
    pub fn total(&self) -> u64 {
        self.ring_buffer_full
            + self.inflight_table_full
            + self.targets_table_full
            + self.lifecycle_ring_buffer_full
            + self.recorder_queue_full
            + self.unpaired_calls
    }
}

/// A user stack, symbolized while its process was alive: events name it by
/// (pid, id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackRecord {
    pub pid: u32,
    pub id: u32,
    pub stack: Stack,
}

/// The file a file-backed mmap mapped, found while the process was alive:
/// written before the mmap's Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingRecord {
    pub pid: u32,
    /// The address the mmap returned.
    pub start: u64,
    pub path: String,
}

/// `vm.max_map_count` changed during the recording: from `at_ns` on,
/// events are judged against the new limit, as the live view did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LimitRecord {
    pub at_ns: u64,
    pub max_map_count: u64,
    /// The NEAR-LIMIT threshold for it, in VMAs.
    pub warn_at: u64,
}

/// Every live process's count at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    pub at_ns: u64,
    pub counts: Vec<(u32, i64)>,
}

#[derive(Clone, Debug)]
pub enum Record {
    Header(Header),
    Process(ProcessInfo),
    Event(Event),
    Lost(LostRecord),
    Checkpoint(Checkpoint),
    /// Written when recording closes cleanly.
    End {
        events: u64,
    },
    Stack(StackRecord),
    Mapping(MappingRecord),
    Limit(LimitRecord),
}

pub fn preamble() -> [u8; PREAMBLE_LEN] {
    let mut bytes = [0u8; PREAMBLE_LEN];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes
}

fn put_str(out: &mut BytesMut, text: &str) {
    out.put_u32_le(text.len() as u32);
    out.put_slice(text.as_bytes());
}

pub fn event_bytes(event: &Event) -> &[u8] {
    // SAFETY: Event is plain `#[repr(C)]` data without padding.
    unsafe { std::slice::from_raw_parts((event as *const Event).cast::<u8>(), EVENT_SIZE) }
}

/// One framed record, ready to append to a file.
pub fn encode(record: &Record) -> Bytes {
    let mut payload = BytesMut::with_capacity(EVENT_SIZE + 16);
    let kind = match record {
        Record::Header(h) => {
            put_str(&mut payload, &h.tool_version);
            put_str(&mut payload, &h.hostname);
            put_str(&mut payload, &h.kernel_release);
            payload.put_u64_le(h.max_map_count);
            payload.put_u64_le(h.warn_at);
            payload.put_i64_le(h.clock_offset_ns);
            payload.put_u64_le(h.start_ns);
            payload.put_u64_le(h.task_mm_offset);
            payload.put_u64_le(h.mm_map_count_offset);
            put_str(&mut payload, &h.command_line);
            Kind::Header
        }
        Record::Process(p) => {
            payload.put_u32_le(p.pid);
            payload.put_u64_le(p.at_ns);
            put_str(&mut payload, &p.cmdline);
            put_str(&mut payload, &p.maps);
            Kind::Process
        }
        Record::Event(event) => {
            payload.put_slice(event_bytes(event));
            Kind::Event
        }
        Record::Lost(l) => {
            for value in [
                l.at_ns,
                l.ring_buffer_full,
                l.inflight_table_full,
                l.targets_table_full,
                l.lifecycle_ring_buffer_full,
                l.recorder_queue_full,
                l.unpaired_calls,
                l.kernel_skipped_runs,
            ] {
                payload.put_u64_le(value);
            }
            Kind::Lost
        }
        Record::Checkpoint(c) => {
            payload.put_u64_le(c.at_ns);
            payload.put_u32_le(c.counts.len() as u32);
            for (pid, count) in &c.counts {
                payload.put_u32_le(*pid);
                payload.put_i64_le(*count);
            }
            Kind::Checkpoint
        }
        Record::End { events } => {
            payload.put_u64_le(*events);
            Kind::End
        }
        Record::Stack(s) => {
            payload.put_u32_le(s.pid);
            payload.put_u32_le(s.id);
            payload.put_u8(u8::from(s.stack.truncated));
            payload.put_u32_le(s.stack.frames.len() as u32);
            for frame in &s.stack.frames {
                payload.put_u64_le(frame.addr);
                payload.put_u64_le(frame.offset);
                put_str(&mut payload, frame.function.as_deref().unwrap_or(""));
                put_str(&mut payload, frame.module.as_deref().unwrap_or(""));
                put_str(&mut payload, frame.file.as_deref().unwrap_or(""));
                payload.put_u32_le(frame.line.unwrap_or(0));
            }
            Kind::Stack
        }
        Record::Mapping(m) => {
            payload.put_u32_le(m.pid);
            payload.put_u64_le(m.start);
            put_str(&mut payload, &m.path);
            Kind::Mapping
        }
        Record::Limit(l) => {
            for value in [l.at_ns, l.max_map_count, l.warn_at] {
                payload.put_u64_le(value);
            }
            Kind::Limit
        }
    };
    frame(kind as u8, &payload)
}

fn frame(kind: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(FRAME_HEADER_LEN + payload.len() + FRAME_TRAILER_LEN);
    out.put_u8(kind);
    out.put_slice(&[0; 3]);
    out.put_u32_le(payload.len() as u32);
    out.put_slice(payload);
    let crc = crc32fast::hash(&out);
    out.put_u32_le(crc);
    out.freeze()
}

/// Why a frame could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The data ends inside the frame: a cut file.
    Truncated,
    /// The frame is damaged: bad checksum, impossible length, unknown kind
    /// or malformed payload.
    Corrupt(String),
}

/// Decodes the frame at the start of `data`: the record and its length.
pub fn decode(data: &[u8]) -> Result<(Record, usize), FrameError> {
    if data.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    let kind_byte = data[0];
    let len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    if len > MAX_PAYLOAD {
        return Err(FrameError::Corrupt(format!(
            "record length {len} is beyond any record"
        )));
    }
    let total = FRAME_HEADER_LEN + len as usize + FRAME_TRAILER_LEN;
    if data.len() < total {
        return Err(FrameError::Truncated);
    }
    let body_end = FRAME_HEADER_LEN + len as usize;
    let stored = u32::from_le_bytes(data[body_end..total].try_into().expect("4 bytes"));
    if crc32fast::hash(&data[..body_end]) != stored {
        return Err(FrameError::Corrupt("checksum mismatch".into()));
    }
    let kind = Kind::from_u8(kind_byte)
        .ok_or_else(|| FrameError::Corrupt(format!("unknown record kind {kind_byte}")))?;
    let record = decode_payload(kind, &data[FRAME_HEADER_LEN..body_end])
        .ok_or_else(|| FrameError::Corrupt(format!("malformed {kind:?} record")))?;
    Ok((record, total))
}

fn get_str(buf: &mut &[u8]) -> Option<String> {
    let len = get_u32(buf)? as usize;
    if buf.remaining() < len {
        return None;
    }
    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
    buf.advance(len);
    Some(text)
}

fn get_u32(buf: &mut &[u8]) -> Option<u32> {
    (buf.remaining() >= 4).then(|| buf.get_u32_le())
}

fn get_u64(buf: &mut &[u8]) -> Option<u64> {
    (buf.remaining() >= 8).then(|| buf.get_u64_le())
}

fn get_i64(buf: &mut &[u8]) -> Option<i64> {
    (buf.remaining() >= 8).then(|| buf.get_i64_le())
}

fn decode_payload(kind: Kind, mut buf: &[u8]) -> Option<Record> {
    let buf = &mut buf;
    let record = match kind {
        Kind::Header => Record::Header(Header {
            tool_version: get_str(buf)?,
            hostname: get_str(buf)?,
            kernel_release: get_str(buf)?,
            max_map_count: get_u64(buf)?,
            warn_at: get_u64(buf)?,
            clock_offset_ns: get_i64(buf)?,
            start_ns: get_u64(buf)?,
            task_mm_offset: get_u64(buf)?,
            mm_map_count_offset: get_u64(buf)?,
            command_line: get_str(buf)?,
        }),
        Kind::Process => Record::Process(ProcessInfo {
            pid: get_u32(buf)?,
            at_ns: get_u64(buf)?,
            cmdline: get_str(buf)?,
            maps: get_str(buf)?,
        }),
        Kind::Event => {
            if buf.len() != EVENT_SIZE {
                return None;
            }
            // SAFETY: exactly EVENT_SIZE bytes of plain data; every bit
            // pattern is a valid Event.
            let event: Event = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
            buf.advance(EVENT_SIZE);
            Record::Event(event)
        }
        Kind::Lost => Record::Lost(LostRecord {
            at_ns: get_u64(buf)?,
            ring_buffer_full: get_u64(buf)?,
            inflight_table_full: get_u64(buf)?,
            targets_table_full: get_u64(buf)?,
            lifecycle_ring_buffer_full: get_u64(buf)?,
            recorder_queue_full: get_u64(buf)?,
            // Format 2 ends here.
            unpaired_calls: get_u64(buf).unwrap_or(0),
            kernel_skipped_runs: get_u64(buf).unwrap_or(0),
        }),
        Kind::Checkpoint => {
            let at_ns = get_u64(buf)?;
            let n = get_u32(buf)? as usize;
            // Each entry is 12 bytes: the count is checked against what is
            // there before anything is allocated for it.
            if buf.remaining() != n.checked_mul(12)? {
                return None;
            }
            let mut counts = Vec::with_capacity(n);
            for _ in 0..n {
                counts.push((get_u32(buf)?, get_i64(buf)?));
            }
            Record::Checkpoint(Checkpoint { at_ns, counts })
        }
        Kind::End => Record::End {
            events: get_u64(buf)?,
        },
        Kind::Stack => {
            let pid = get_u32(buf)?;
            let id = get_u32(buf)?;
            if buf.remaining() < 1 {
                return None;
            }
            let truncated = buf.get_u8() != 0;
            let n = get_u32(buf)? as usize;
            // A frame takes at least 32 bytes: checked before allocating.
            if n.checked_mul(32)? > buf.remaining() {
                return None;
            }
            let mut frames = Vec::with_capacity(n);
            for _ in 0..n {
                let addr = get_u64(buf)?;
                let offset = get_u64(buf)?;
                let text = |s: String| (!s.is_empty()).then_some(s);
                let function = text(get_str(buf)?);
                let module = text(get_str(buf)?);
                let file = text(get_str(buf)?);
                let line = Some(get_u32(buf)?).filter(|l| *l != 0);
                frames.push(Frame {
                    addr,
                    function,
                    offset,
                    module,
                    file,
                    line,
                    build_id: None,
                });
            }
            Record::Stack(StackRecord {
                pid,
                id,
                stack: Stack { frames, truncated },
            })
        }
        Kind::Mapping => Record::Mapping(MappingRecord {
            pid: get_u32(buf)?,
            start: get_u64(buf)?,
            path: get_str(buf)?,
        }),
        Kind::Limit => Record::Limit(LimitRecord {
            at_ns: get_u64(buf)?,
            max_map_count: get_u64(buf)?,
            warn_at: get_u64(buf)?,
        }),
    };
    buf.is_empty().then_some(record)
}
