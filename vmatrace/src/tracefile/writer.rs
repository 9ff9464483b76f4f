//! Recording: records are framed on the event loop and handed to a writer
//! thread through a bounded queue, so a slow disk never stalls the reading
//! of the ring buffer. A record that does not fit the queue is counted and
//! reported in the file's closing lost-events record, never dropped
//! silently.

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use bytes::Bytes;

use super::format::{self, Header, LostRecord, Record};
use crate::{
    error::Failure,
    outfile::{self, Kind, Verdict},
};

/// Records waiting for the disk, at most.
const QUEUE_RECORDS: usize = 1 << 16;
/// How long written records may sit in the process before they reach the
/// file: the most a kill -9 can take away.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

enum Message {
    /// A framed record, and whether it is an event.
    Record(Bytes, RecordRole),
    /// Flush, sync and stop.
    Close,
}

/// What the writer must remember of a record to start a new file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RecordRole {
    Event,
    /// A process snapshot: repeated at the head of every new file, so each
    /// file of a rotation stands alone.
    Process(u32),
    /// A symbolized stack: repeated too, for the events to come that name it.
    Stack,
    Other,
}

pub struct Recorder {
    sink: RecordSink,
    writer: Option<JoinHandle<io::Result<()>>>,
    pub events: u64,
}

/// Another thread's way into the recording (the printer writes the stacks
/// it symbolizes).
#[derive(Clone)]
pub struct RecordSink {
    queue: SyncSender<Message>,
    /// Records the queue had no room for.
    dropped: Arc<AtomicU64>,
}

impl RecordSink {
    /// Queues a record; never waits for the disk.
    pub fn record(&self, record: &Record) {
        let role = match record {
            Record::Event(_) => RecordRole::Event,
            Record::Process(p) => RecordRole::Process(p.pid),
            Record::Stack(_) => RecordRole::Stack,
            _ => RecordRole::Other,
        };
        match self
            .queue
            .try_send(Message::Record(format::encode(record), role))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Recorder {
    /// Checks that a recording may be written at `path` (see [`outfile`]
    /// for what is never overwritten) and makes room for it, before the
    /// probes are loaded.
    pub fn prepare(path: &Path, max_size: Option<u64>, force: bool) -> Result<(), Failure> {
        let verdict = outfile::verdict(path, Kind::Trace, force)?;
        if max_size.is_some() {
            if verdict == Verdict::Stream {
                return Err(Failure::usage(anyhow!(
                    "--max-size rotates the file, and {} is a pipe or a device",
                    path.display()
                )));
            }
            // Rotation moves the full file over FILE.1: that must be ours.
            outfile::verdict(&outfile::with_suffix(path, ".1"), Kind::Trace, force)?;
        }
        outfile::make_room(path, Kind::Trace, force)
    }

    /// Starts the recording at `path` (prepared with [`Recorder::prepare`]),
    /// readable by its owner only: it holds the address-space layout of
    /// someone's process. With `max_size`, the recording keeps its newest
    /// part within that many bytes: `path` and `path.1`, each up to half of
    /// it; when `path` is full it becomes `path.1` (replacing the older one)
    /// and a new `path` starts.
    pub fn create(
        path: &Path,
        header: &Header,
        max_size: Option<u64>,
    ) -> Result<Recorder, Failure> {
        let header = format::encode(&Record::Header(header.clone()));
        let file = outfile::create(path, Kind::Trace, false)?;
        let segment = Segment::start(file, &header, &[])
            .with_context(|| format!("cannot write the trace file {}", path.display()))
            .map_err(Failure::environment)?;
        let rotation = max_size.map(|max| Rotation {
            segment_bytes: (max / 2).max(64 * 1024),
            header,
            processes: Vec::new(),
            stacks: VecDeque::new(),
            stack_bytes: 0,
        });
        let (queue, incoming) = sync_channel(QUEUE_RECORDS);
        let path = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("vmatrace-recorder".into())
            .spawn(move || write_loop(path, segment, rotation, incoming))
            .context("starting the recorder thread")
            .map_err(Failure::environment)?;
        Ok(Recorder {
            sink: RecordSink {
                queue,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            writer: Some(writer),
            events: 0,
        })
    }

    /// Queues a record; never waits for the disk.
    pub fn record(&mut self, record: &Record) {
        if matches!(record, Record::Event(_)) {
            self.events += 1;
        }
        self.sink.record(record);
    }

    pub fn sink(&self) -> RecordSink {
        self.sink.clone()
    }

    /// Records the queue had no room for, so far.
    pub fn dropped(&self) -> u64 {
        self.sink.dropped.load(Ordering::Relaxed)
    }

    /// Writes the final lost-events record and the closing record, and waits
    /// until everything is on disk.
    pub fn close(mut self, mut lost: LostRecord) -> anyhow::Result<()> {
        lost.recorder_queue_full = self.dropped();
        // Blocking here is fine: tracing is over.
        self.sink
            .queue
            .send(Message::Record(
                format::encode(&Record::Lost(lost)),
                RecordRole::Other,
            ))
            .and_then(|_| self.sink.queue.send(Message::Close))
            .map_err(|_| anyhow!("the recorder thread stopped early"))?;
        let writer = self.writer.take().expect("closed once");
        writer
            .join()
            .map_err(|_| anyhow!("the recorder thread panicked"))?
            .context("writing the trace file")
    }
}

/// One file being written.
struct Segment {
    out: BufWriter<File>,
    bytes: u64,
    events: u64,
}

impl Segment {
    fn start(file: File, header: &[u8], carried: &[Bytes]) -> io::Result<Segment> {
        let mut segment = Segment {
            out: BufWriter::with_capacity(1 << 20, file),
            bytes: 0,
            events: 0,
        };
        segment.write(&format::preamble())?;
        segment.write(header)?;
        for record in carried {
            segment.write(record)?;
        }
        segment.out.flush()?;
        Ok(segment)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    /// The closing record, then everything onto the disk.
    fn close(mut self) -> io::Result<()> {
        let end = format::encode(&Record::End {
            events: self.events,
        });
        self.write(&end)?;
        self.out.flush()?;
        self.out.get_ref().sync_all()
    }
}

struct Rotation {
    segment_bytes: u64,
    header: Bytes,
    /// The newest snapshot of each process, by pid.
    processes: Vec<(u32, Bytes)>,
    /// The stacks symbolized so far, newest last, within a quarter of a
    /// file: an event of the new file may name one.
    stacks: VecDeque<Bytes>,
    stack_bytes: u64,
}

impl Rotation {
    fn keep(&mut self, role: RecordRole, bytes: &Bytes) {
        match role {
            RecordRole::Process(pid) => {
                self.processes.retain(|(p, _)| *p != pid);
                self.processes.push((pid, bytes.clone()));
            }
            RecordRole::Stack => {
                self.stack_bytes += bytes.len() as u64;
                self.stacks.push_back(bytes.clone());
                while self.stack_bytes > self.segment_bytes / 4 {
                    let Some(oldest) = self.stacks.pop_front() else {
                        break;
                    };
                    self.stack_bytes -= oldest.len() as u64;
                }
            }
            RecordRole::Event | RecordRole::Other => {}
        }
    }

    /// What every new file starts with after its header.
    fn carried(&self) -> Vec<Bytes> {
        let processes = self.processes.iter().map(|(_, b)| b.clone());
        processes.chain(self.stacks.iter().cloned()).collect()
    }
}

fn write_loop(
    path: std::path::PathBuf,
    mut segment: Segment,
    mut rotation: Option<Rotation>,
    incoming: Receiver<Message>,
) -> io::Result<()> {
    let mut last_flush = Instant::now();
    loop {
        match incoming.recv_timeout(FLUSH_EVERY) {
            Ok(Message::Record(bytes, role)) => {
                if let Some(rotation) = rotation.as_mut() {
                    rotation.keep(role, &bytes);
                    if segment.bytes + bytes.len() as u64 > rotation.segment_bytes {
                        segment = rotate(&path, segment, rotation)?;
                    }
                }
                segment.events += u64::from(role == RecordRole::Event);
                segment.write(&bytes)?;
            }
            Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => return segment.close(),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            segment.out.flush()?;
            last_flush = Instant::now();
        }
    }
}

/// Closes the full file, makes it `<path>.1` and starts a new `<path>`.
fn rotate(path: &Path, full: Segment, rotation: &Rotation) -> io::Result<Segment> {
    full.close()?;
    std::fs::rename(path, outfile::with_suffix(path, ".1"))?;
    let file = outfile::create_new(path)?;
    Segment::start(file, &rotation.header, &rotation.carried())
}
