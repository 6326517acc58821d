//! Flattening one large input on several threads: the thread that reads it splits it into
//! records and hands chunks of them to helper threads, which flatten each chunk into a batch; the
//! results are taken back in input order, so the rest of the pipeline sees the input's rows, its
//! problems and its quarantine in the order one thread would have given them.
//!
//! A `{"Records":[...]}` file of a gigabyte (a CloudTrail Lake export, concatenated archives)
//! would otherwise be flattened by one worker while the others wait: reading and splitting run
//! near memory speed, flattening is most of the cost.

use std::collections::{BTreeMap, VecDeque};

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use crossbeam_channel::{Receiver, Sender, bounded};

use super::dispatch::{RecordSink, dispatch};
use crate::flatten::Flattener;
use crate::read::classify::{SkipReason, TopFields};

/// Records a chunk holds at most. About `4 × helpers` chunks and their batches are in memory at
/// once: with chunks of 4,096 records (8 MiB) two helpers added 202 MiB to the peak of a 1M-event
/// file, with 1,024 they add 69 MiB at the same speed-up (benches/README.md).
const CHUNK_RECORDS: usize = 1024;
/// Bytes of records a chunk holds at most.
const CHUNK_BYTES: usize = 2 << 20;

/// Records read and not yet flattened, back to back.
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    /// Each record's end in `bytes`, index in the input and byte offset in it.
    records: Vec<(usize, u64, u64)>,
}

/// What flattening a chunk gave.
pub(super) struct ChunkResult {
    pub(super) batch: Result<RecordBatch, ArrowError>,
    pub(super) events: u64,
    pub(super) repaired: u64,
    pub(super) skipped: BTreeMap<SkipReason, u64>,
    /// Records that could not be flattened: index, offset, why, and the bytes to quarantine.
    pub(super) problems: Vec<(u64, u64, String, Vec<u8>)>,
}

type Job = (Chunk, Sender<ChunkResult>);

/// The reading thread's side: the chunk being filled and the chunks being flattened, in order.
pub(super) struct ChunkPipeline {
    jobs: Option<Sender<Job>>,
    pending: VecDeque<Receiver<ChunkResult>>,
    current: Chunk,
    max_pending: usize,
}

impl ChunkPipeline {
    /// Starts `helpers` threads (at least one) in `scope`, each with a flattener like `template`;
    /// `None` when no thread could be started.
    pub(super) fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        helpers: usize,
        template: &Flattener,
    ) -> Option<ChunkPipeline> {
        let (jobs, queue) = bounded::<Job>(helpers * 2);
        let mut started = 0;
        for index in 0..helpers {
            let queue = queue.clone();
            let flattener = template.like();
            let spawned = std::thread::Builder::new()
                .name(format!("keytrail-flatten-{index}"))
                .spawn_scoped(scope, move || flatten_chunks(&queue, flattener));
            started += usize::from(spawned.is_ok());
        }
        (started > 0).then(|| ChunkPipeline {
            jobs: Some(jobs),
            pending: VecDeque::new(),
            current: Chunk::default(),
            max_pending: started * 2,
        })
    }

    /// Adds a record; returns the results of chunks now done, in input order.
    pub(super) fn push(&mut self, bytes: &[u8], index: u64, offset: u64, done: &mut Vec<ChunkResult>) {
        self.current.bytes.extend_from_slice(bytes);
        self.current
            .records
            .push((self.current.bytes.len(), index, offset));
        if self.current.records.len() >= CHUNK_RECORDS || self.current.bytes.len() >= CHUNK_BYTES {
            self.submit();
            // Wait only when enough chunks are in flight; otherwise take what is done.
            while self.pending.len() > self.max_pending {
                self.take_next(done, true);
            }
            while self.take_next(done, false) {}
        }
    }

    /// Flattens what is left and returns every result, in input order.
    pub(super) fn finish(&mut self, done: &mut Vec<ChunkResult>) {
        if !self.current.records.is_empty() {
            self.submit();
        }
        self.jobs = None;
        while self.take_next(done, true) {}
    }

    fn submit(&mut self) {
        let chunk = std::mem::take(&mut self.current);
        let (reply, result) = bounded(1);
        if let Some(jobs) = &self.jobs
            && jobs.send((chunk, reply)).is_ok()
        {
            self.pending.push_back(result);
        }
    }

    /// Moves the oldest chunk's result to `done` if it is ready (or, with `wait`, once it is);
    /// false when there is none.
    fn take_next(&mut self, done: &mut Vec<ChunkResult>, wait: bool) -> bool {
        let Some(next) = self.pending.front() else {
            return false;
        };
        let result = if wait {
            next.recv().ok()
        } else {
            next.try_recv().ok()
        };
        match result {
            Some(result) => {
                self.pending.pop_front();
                done.push(result);
                true
            }
            // A helper that died (it cannot: it only flattens) leaves its chunk unaccounted
            // for; with `wait` the loop ends instead of hanging.
            None if wait => {
                self.pending.pop_front();
                false
            }
            None => false,
        }
    }
}

/// A helper thread: flattens chunks until the reading thread is done.
fn flatten_chunks(queue: &Receiver<Job>, mut flattener: Flattener) {
    while let Ok((chunk, reply)) = queue.recv() {
        let mut sink = ChunkSink {
            flattener: &mut flattener,
            record: (0, 0),
            events: 0,
            repaired: 0,
            skipped: BTreeMap::new(),
            problems: Vec::new(),
        };
        let mut start = 0;
        for &(end, index, offset) in &chunk.records {
            sink.record = (index, offset);
            dispatch(&chunk.bytes[start..end], &mut sink);
            start = end;
        }
        let result = ChunkResult {
            events: sink.events,
            repaired: sink.repaired,
            skipped: sink.skipped,
            problems: sink.problems,
            batch: flattener.finish_batch(),
        };
        if reply.send(result).is_err() {
            return;
        }
    }
}

/// Where a helper's records go: the flattener, and counts and problems for the reading thread.
struct ChunkSink<'a> {
    flattener: &'a mut Flattener,
    record: (u64, u64),
    events: u64,
    repaired: u64,
    skipped: BTreeMap<SkipReason, u64>,
    problems: Vec<(u64, u64, String, Vec<u8>)>,
}

impl RecordSink for ChunkSink<'_> {
    fn event(&mut self, event: &TopFields<'_>, original: &[u8]) {
        match self.flattener.append_event(event, original) {
            Ok(()) => self.events += 1,
            Err(e) => self.invalid(e.to_string(), original),
        }
    }

    fn skipped(&mut self, reason: SkipReason) {
        *self.skipped.entry(reason).or_default() += 1;
    }

    fn repaired(&mut self) {
        self.repaired += 1;
    }

    fn invalid(&mut self, message: String, original: &[u8]) {
        let (index, offset) = self.record;
        self.problems.push((index, offset, message, original.to_vec()));
    }
}
