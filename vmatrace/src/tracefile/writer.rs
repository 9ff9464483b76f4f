//! Recording: records are framed on the event loop and handed to a writer
//! thread through a bounded queue, so a slow disk never stalls the reading
//! of the ring buffer. A record that does not fit the queue is counted and
//! reported in the file's closing lost-events record, never dropped
//! silently.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
    sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use bytes::Bytes;

use super::format::{self, Header, LostRecord, Record};
use crate::error::Failure;

/// Records waiting for the disk, at most.
const QUEUE_RECORDS: usize = 1 << 16;
/// How long written records may sit in the process before they reach the
/// file: the most a kill -9 can take away.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

enum Message {
    Record(Bytes),
    /// Flush, sync and stop.
    Close,
}

pub struct Recorder {
    queue: SyncSender<Message>,
    writer: Option<JoinHandle<io::Result<()>>>,
    /// Records the queue had no room for.
    pub dropped: u64,
    pub events: u64,
}

impl Recorder {
    /// Creates (or truncates) `path`, readable by its owner only: it holds
    /// the address-space layout of someone's process.
    pub fn create(path: &Path, header: &Header) -> Result<Recorder, Failure> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create the trace file {}", path.display()))
            .map_err(Failure::usage)?;
        // An existing file keeps its mode through open(): set it.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))
            .map_err(Failure::environment)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&format::preamble())
            .and_then(|_| out.write_all(&format::encode(&Record::Header(header.clone()))))
            .and_then(|_| out.flush())
            .with_context(|| format!("writing {}", path.display()))
            .map_err(Failure::environment)?;
        let (queue, incoming) = sync_channel(QUEUE_RECORDS);
        let writer = std::thread::Builder::new()
            .name("vmatrace-recorder".into())
            .spawn(move || write_loop(out, incoming))
            .context("starting the recorder thread")
            .map_err(Failure::environment)?;
        Ok(Recorder {
            queue,
            writer: Some(writer),
            dropped: 0,
            events: 0,
        })
    }

    /// Queues a record; never waits for the disk.
    pub fn record(&mut self, record: &Record) {
        if matches!(record, Record::Event(_)) {
            self.events += 1;
        }
        match self.queue.try_send(Message::Record(format::encode(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped += 1,
        }
    }

    /// Writes the final lost-events record and the closing record, and waits
    /// until everything is on disk.
    pub fn close(mut self, mut lost: LostRecord) -> anyhow::Result<()> {
        lost.recorder_queue_full = self.dropped;
        let closing = [
            format::encode(&Record::Lost(lost)),
            format::encode(&Record::End {
                events: self.events,
            }),
        ];
        for record in closing {
            // Blocking here is fine: tracing is over.
            self.queue
                .send(Message::Record(record))
                .map_err(|_| anyhow!("the recorder thread stopped early"))?;
        }
        self.queue
            .send(Message::Close)
            .map_err(|_| anyhow!("the recorder thread stopped early"))?;
        let writer = self.writer.take().expect("closed once");
        writer
            .join()
            .map_err(|_| anyhow!("the recorder thread panicked"))?
            .context("writing the trace file")
    }
}

fn write_loop(mut out: BufWriter<File>, incoming: Receiver<Message>) -> io::Result<()> {
    let mut last_flush = Instant::now();
    loop {
        match incoming.recv_timeout(FLUSH_EVERY) {
            Ok(Message::Record(bytes)) => out.write_all(&bytes)?,
            Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => {
                out.flush()?;
                return out.get_ref().sync_all();
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            out.flush()?;
            last_flush = Instant::now();
        }
    }
}
