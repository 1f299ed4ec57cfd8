//! Reads durable records from a position on, decoding them into events for the shipper.
//! Reads only up to what the writer fsynced; moves past sealed segments on its own.

use super::Inner;
use super::record::{self, Bad};
use super::segment::{self, Pos};
use gatehouse_common::audit::AuditEvent;
use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::sync::Arc;

/// Events read in one go, and where reading stopped.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// The decoded events, in spool order.
    pub events: Vec<AuditEvent>,
    /// Position after the last record read (ack this to delete them).
    pub end: Pos,
    /// Records consumed (events plus any undecodable ones skipped).
    pub records: u64,
    /// Payload bytes consumed.
    pub bytes: usize,
}

/// A cursor over the spool's durable records.
pub struct SpoolReader {
    inner: Arc<Inner>,
    pos: Pos,
    file: Option<(u64, u64, BufReader<File>)>,
    payload: Vec<u8>,
}

impl SpoolReader {
    pub(crate) fn new(inner: Arc<Inner>, pos: Pos) -> Self {
        Self {
            inner,
            pos,
            file: None,
            payload: Vec::new(),
        }
    }

    /// Where the next read starts.
    pub fn position(&self) -> Pos {
        self.pos
    }

    /// Moves to `pos` (e.g. back to the ack cursor after a reconnect).
    pub fn seek(&mut self, pos: Pos) {
        self.pos = pos;
    }

    /// Normalises the position: the next segment once a sealed one is read to its end.
    /// Returns the readable end of the current segment, `None` when nothing is readable.
    fn settle(&mut self) -> Option<u64> {
        let segments = self.inner.segments_lock();
        loop {
            let (&id, state) = segments.range(self.pos.segment..).next()?;
            if id != self.pos.segment {
                self.pos = Pos {
                    segment: id,
                    offset: 0,
                };
            }
            if self.pos.offset < state.durable_len {
                return Some(state.durable_len);
            }
            if state.sealed && segments.range(id + 1..).next().is_some() {
                self.pos = Pos {
                    segment: id + 1,
                    offset: 0,
                };
                continue;
            }
            return None;
        }
    }

    /// Reads up to `max_events` events / about `max_bytes` payload bytes (at least one).
    pub fn read_batch(&mut self, max_events: usize, max_bytes: usize) -> io::Result<ReadBatch> {
        let mut batch = ReadBatch {
            end: self.pos,
            ..ReadBatch::default()
        };
        while batch.events.len() < max_events && (batch.bytes < max_bytes || batch.records == 0) {
            let Some(end) = self.settle() else { break };
            let len = self.read_record(end)?;
            match len {
                Ok((n, event)) => {
                    batch.records += 1;
                    batch.bytes += n;
                    if let Some(event) = event {
                        batch.events.push(event);
                    }
                }
                Err(bad) => {
                    // Corrupted after open (the open scan passed it): skip the segment's rest.
                    self.inner.metrics.corrupt.inc();
                    tracing::error!(segment = self.pos.segment, offset = self.pos.offset, reason = %bad,
                        "corrupt audit spool record while shipping; skipping the rest of the segment");
                    self.pos.offset = end;
                    self.file = None;
                }
            }
            batch.end = self.pos;
        }
        // Past a sealed segment's end: point at the next one, so the ack frees the segment.
        let _ = self.settle();
        batch.end = self.pos;
        Ok(batch)
    }

    /// Reads the record at the position (which is below `end`); advances past it.
    #[allow(clippy::type_complexity)]
    fn read_record(&mut self, end: u64) -> io::Result<Result<(usize, Option<AuditEvent>), Bad>> {
        let Pos {
            segment: id,
            offset,
        } = self.pos;
        let reopen = !matches!(&self.file, Some((fid, foff, _)) if *fid == id && *foff == offset);
        if reopen {
            let mut file = match File::open(segment::path(&self.inner.dir, id)) {
                Ok(file) => file,
                // Deleted behind the spool's back: skip it (logged) rather than retry forever.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(Bad::Missing)),
                Err(e) => return Err(e),
            };
            file.seek(SeekFrom::Start(offset))?;
            self.file = Some((id, offset, BufReader::with_capacity(256 * 1024, file)));
        }
        let Some((_, foff, reader)) = self.file.as_mut() else {
            return Err(io::Error::other("segment not open"));
        };
        let n = match record::read_one(reader, &mut self.payload)? {
            Some(Ok(n)) => n,
            Some(Err(bad)) => return Ok(Err(bad)),
            None => return Ok(Err(Bad::Short)),
        };
        if offset + n as u64 > end {
            return Ok(Err(Bad::Short));
        }
        *foff += n as u64;
        self.pos.offset += n as u64;
        let event = match serde_json::from_slice::<AuditEvent>(&self.payload) {
            Ok(event) => Some(event),
            Err(err) => {
                tracing::error!(segment = id, offset, error = %err,
                    "spooled record is not an audit event this agent understands; skipping it");
                None
            }
        };
        Ok(Ok((n, event)))
    }
}
