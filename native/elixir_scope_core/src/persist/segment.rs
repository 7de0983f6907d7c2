//! Segment files: how a capture is written to disk and read back.
//!
//! A segment starts with a header (`ESCOPE` magic, format version) and holds frames
//! `[len u32 LE][crc32 u32 LE][record]`, each record one [`Record`] in MessagePack (`rmp-serde`).
//! Events refer to processes and atoms by the words the live capture keys them with; a
//! [`Record::Symbol`] frame, written before the first event that uses a word, gives that word's
//! ETF encoding, so a reader on another VM can decode it.
//!
//! Reading never trusts the file: every length is bounds-checked, every frame's CRC is verified,
//! and the first frame that is incomplete or corrupt ends the readable part ([`Scan::valid_len`]),
//! which is what a crash mid-write leaves behind. Nothing here panics on any input.

use crate::formats::event::{EventRef, Header};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"ESCOPESG";
/// The format version this code writes (and the newest it reads). Version 2 added the run
/// token of clock records and index footers; version 1 files read as they are.
pub const VERSION: u32 = 2;
/// Header size: magic and version.
pub const HEADER_LEN: usize = 12;
/// The largest record accepted (a payload over the store's cap never gets near it).
pub const MAX_RECORD: usize = 64 << 20;
const FRAME_HEAD: usize = 8;
/// The smallest frame an event takes (all fields zero, no payload): a file of `n` bytes holds
/// at most `n / MIN_EVENT_FRAME` events.
pub const MIN_EVENT_FRAME: u64 = 27;

/// One record of a segment. Byte fields borrow from the buffer the record was read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record<'a> {
    /// A stored event, as the capture log holds it.
    Event {
        /// Its seq in the capture.
        seq: u64,
        /// Monotonic nanoseconds.
        ts: i64,
        /// Process word.
        pid: u64,
        /// Peer process word, or 0.
        peer: u64,
        /// Module atom word, or 0.
        module: u64,
        /// Function atom word, or 0.
        function: u64,
        /// Arity.
        arity: u8,
        /// Kind discriminant.
        kind: u8,
        /// Flag bits.
        flags: u8,
        /// The stored payload bytes.
        #[serde(borrow, with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// What a process or atom word stands for: its ETF encoding (with the version byte).
    Symbol {
        /// The word events use.
        word: u64,
        /// `term_to_binary` of the pid or atom.
        #[serde(borrow, with = "serde_bytes")]
        etf: &'a [u8],
    },
    /// The capture's clock: monotonic `ts` and system time (ns since the epoch) at one instant,
    /// so times can be shown as dates when the trace is read elsewhere.
    Clock {
        /// Monotonic nanoseconds.
        monotonic: i64,
        /// System nanoseconds since the Unix epoch.
        system: i64,
        /// A token of the VM run that captured the events: pids and ports are only the reading
        /// VM's own when it is the same run.
        #[serde(default)]
        run: u64,
    },
    /// The capture's counters when the frames before it were written.
    Stats {
        /// Events the capture dropped (the store was full).
        dropped: u64,
        /// Events stored with a truncated payload.
        truncated: u64,
    },
    /// The index footer that ends a sealed segment.
    Footer(Box<crate::persist::footer::Footer>),
}

impl<'a> Record<'a> {
    /// Takes this record, read from a segment at frame `offset`, into account in a footer
    /// being rebuilt.
    pub fn note_in(&self, footer: &mut crate::persist::footer::FooterBuilder, offset: u64) {
        if let Some(ev) = self.as_event() {
            // As read: an unchanged state's payload is elsewhere when its frame has none.
            footer.event(&ev, offset, !ev.shares_payload());
            return;
        }
        match self {
            Record::Symbol { word, etf } => footer.symbol(*word, etf),
            Record::Clock {
                monotonic,
                system,
                run,
            } => footer.clock(*monotonic, *system, *run),
            Record::Stats { dropped, truncated } => footer.stats(*dropped, *truncated),
            Record::Event { .. } | Record::Footer(_) => {}
        }
    }

    /// The event record of a stored event, with `payload` as the bytes to write.
    pub fn event(ev: &EventRef, payload: &'a [u8]) -> Record<'a> {
        let h = &ev.header;
        Record::Event {
            seq: ev.seq,
            ts: h.ts,
            pid: h.pid,
            peer: h.peer,
            module: h.module,
            function: h.function,
            arity: h.arity,
            kind: h.kind,
            flags: h.flags,
            payload,
        }
    }

    /// The event an event record holds (its words as the file has them).
    pub fn as_event(&self) -> Option<EventRef<'a>> {
        match *self {
            Record::Event {
                seq,
                ts,
                pid,
                peer,
                module,
                function,
                arity,
                kind,
                flags,
                payload,
            } => Some(EventRef {
                seq,
                header: Header {
                    ts,
                    pid,
                    peer,
                    module,
                    function,
                    arity,
                    kind,
                    // Deltas live only in a capture's memory (segments hold states whole): a
                    // file that says otherwise is not believed.
                    flags: flags & !crate::formats::event::flags::STATE_DELTA,
                },
                payload,
            }),
            _ => None,
        }
    }
}

/// Why a segment cannot be read at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    /// Not a segment file.
    #[error("not an ElixirScope segment (bad magic)")]
    BadMagic,
    /// Written by a newer ElixirScope.
    #[error("segment format version {0} is newer than this ElixirScope reads ({VERSION}); upgrade ElixirScope")]
    NewerVersion(u32),
    /// Shorter than a header.
    #[error("file too short to be a segment")]
    Truncated,
}

/// What reading a segment found.
#[derive(Debug, PartialEq)]
pub struct Scan<'a> {
    /// Every complete, intact record, in order.
    pub records: Vec<Record<'a>>,
    /// Bytes up to the end of the last good frame: where a writer resumes (the rest is torn).
    pub valid_len: u64,
    /// Whether anything after `valid_len` was cut off (a torn or corrupt frame).
    pub torn: bool,
}

/// Encodes one frame of `record`.
pub fn frame(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(record, &mut out);
    out
}

/// Appends one frame of `record` to `out`.
pub fn frame_into(record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    // Serializing plain data into a Vec cannot fail; an empty record would be refused on read.
    let _ = rmp_serde::encode::write(out, record);
    let body = &out[start + FRAME_HEAD..];
    let (len, crc) = (body.len() as u32, crc32fast::hash(body));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + FRAME_HEAD].copy_from_slice(&crc.to_le_bytes());
}

/// The header of a new segment.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Reads a segment's bytes: its intact records, and where the intact part ends.
///
/// # Errors
/// [`SegmentError`] when the bytes are not a segment this version can read.
pub fn read(bytes: &[u8]) -> Result<Scan<'_>, SegmentError> {
    let mut frames = frames(bytes)?;
    let records = frames.by_ref().collect();
    Ok(Scan {
        records,
        valid_len: frames.pos as u64,
        torn: frames.pos < bytes.len(),
    })
}

/// The intact records of a segment's bytes, one at a time, without collecting them.
///
/// # Errors
/// [`SegmentError`] when the bytes are not a segment this version can read.
pub fn frames(bytes: &[u8]) -> Result<Frames<'_>, SegmentError> {
    let head = bytes.get(..HEADER_LEN).ok_or(SegmentError::Truncated)?;
    if &head[..8] != MAGIC {
        return Err(SegmentError::BadMagic);
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version > VERSION {
        return Err(SegmentError::NewerVersion(version));
    }
    Ok(Frames {
        bytes,
        pos: HEADER_LEN,
    })
}

/// Iterator over a segment's intact records; it ends at the first torn or corrupt frame.
pub struct Frames<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Frames<'_> {
    /// Bytes up to the end of the last record read.
    pub fn valid_len(&self) -> u64 {
        self.pos as u64
    }

    /// Whether bytes remain after the last record read (after the iterator ended: a torn tail).
    pub fn torn(&self) -> bool {
        self.pos < self.bytes.len()
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let (record, next) = frame_at(self.bytes, self.pos)?;
        self.pos = next;
        Some(record)
    }
}

/// The record of the frame at `pos` and where the next frame starts, if the frame is whole,
/// its CRC right and its record readable.
pub fn frame_at(bytes: &[u8], pos: usize) -> Option<(Record<'_>, usize)> {
    let head = bytes.get(pos..pos.checked_add(FRAME_HEAD)?)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let start = pos + FRAME_HEAD;
    let body = bytes.get(start..start.checked_add(len)?)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let record = rmp_serde::from_slice(body).ok()?;
    Some((record, start + len))
}

/// What a segment's records cover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    /// Records read.
    pub records: u64,
    /// Seqs of the first and last events (0 when there are none).
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// Times of the first and last events.
    pub first_ts: i64,
    /// See `first_ts`.
    pub last_ts: i64,
    /// A torn or corrupt tail followed the records.
    pub torn: bool,
}

impl Extent {
    /// Takes one more record into account.
    pub fn add(&mut self, record: &Record) {
        self.records += 1;
        if let Record::Event { seq, ts, .. } = *record {
            if self.first_seq == 0 {
                self.first_seq = seq;
                self.first_ts = ts;
            }
            self.last_seq = seq;
            self.last_ts = ts;
        }
    }
}

/// Appends frames to a segment file.
pub struct SegmentWriter {
    out: BufWriter<File>,
    len: u64,
    scratch: Vec<u8>,
}

impl SegmentWriter {
    /// Creates a new segment at `path` (failing if it exists) and writes its header.
    ///
    /// # Errors
    /// The file system's.
    pub fn create(path: &Path) -> io::Result<SegmentWriter> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // The header reaches the OS before anyone lists the file: a crash then leaves a
        // readable, empty segment.
        out.write_all(&header())?;
        out.flush()?;
        Ok(SegmentWriter {
            out,
            len: HEADER_LEN as u64,
            scratch: Vec::new(),
        })
    }

    /// Opens an existing segment to append to it, after cutting away a torn tail (what a crash
    /// mid-write leaves). Returns the writer and what the segment already holds.
    ///
    /// # Errors
    /// The file system's, or [`SegmentError`] (as `InvalidData`) when it is not a segment.
    pub fn recover(path: &Path) -> io::Result<(SegmentWriter, Extent)> {
        let bytes = crate::formats::fsio::read_regular(path, u64::from(u32::MAX))?;
        let mut frames =
            frames(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut extent = Extent::default();
        frames.by_ref().for_each(|r| extent.add(&r));
        extent.torn = frames.torn();
        let valid_len = frames.valid_len();
        let mut file = OpenOptions::new().write(true).open(path)?;
        file.set_len(valid_len)?;
        io::Seek::seek(&mut file, io::SeekFrom::Start(valid_len))?;
        let writer = SegmentWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            len: valid_len,
            scratch: Vec::new(),
        };
        Ok((writer, extent))
    }

    /// Appends one record; returns the segment's length after it.
    ///
    /// # Errors
    /// The file system's; `InvalidInput` (nothing written) for a record over [`MAX_RECORD`]
    /// bytes, which no reader would take.
    pub fn append(&mut self, record: &Record) -> io::Result<u64> {
        self.scratch.clear();
        frame_into(record, &mut self.scratch);
        if self.scratch.len() - FRAME_HEAD > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a record over the frame size limit",
            ));
        }
        self.out.write_all(&self.scratch)?;
        self.len += self.scratch.len() as u64;
        Ok(self.len)
    }

    /// Hands buffered frames to the OS (they survive a crash of the VM, not of the machine).
    ///
    /// # Errors
    /// The file system's.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and waits until the frames are on disk.
    ///
    /// # Errors
    /// The file system's.
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }

    /// The segment's length in bytes, buffered frames included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the segment holds only its header.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(seq: u64, payload: &[u8]) -> Record<'_> {
        Record::Event {
            seq,
            ts: seq as i64 * 10 - 5,
            pid: 0x1234_5673,
            peer: 0,
            module: 7,
            function: 9,
            arity: 2,
            kind: 8,
            flags: 0,
            payload,
        }
    }

    fn segment(records: &[Record]) -> Vec<u8> {
        let mut bytes = header().to_vec();
        records.iter().for_each(|r| bytes.extend(frame(r)));
        bytes
    }

    fn sample() -> Vec<Record<'static>> {
        vec![
            Record::Clock {
                monotonic: -5,
                system: 1_700_000_000_000_000_000,
                run: 77,
            },
            Record::Symbol {
                word: 0x1234_5673,
                etf: &[131, 88, 119, 1, b'n', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            event(1, &[131, 97, 1]),
            event(2, &[]),
            event(3, &[131, 109, 0, 0, 0, 3, b'a', b'b', b'c']),
            Record::Stats {
                dropped: 2,
                truncated: 1,
            },
        ]
    }

    #[test]
    fn a_file_never_makes_a_state_a_delta() {
        // Only a capture's memory holds deltas; a record claiming one is read as a state
        // without its payload, as it also says.
        let mut r = event(3, b"anything");
        if let Record::Event { flags: f, .. } = &mut r {
            *f = crate::formats::event::flags::STATE_DELTA
                | crate::formats::event::flags::PAYLOAD_DROPPED;
        }
        let ev = r.as_event().unwrap();
        assert_eq!(
            ev.header.flags,
            crate::formats::event::flags::PAYLOAD_DROPPED
        );
    }

    #[test]
    fn records_round_trip() {
        let recs = sample();
        let bytes = segment(&recs);
        let scan = read(&bytes).unwrap();
        assert_eq!(scan.records, recs);
        assert_eq!(scan.valid_len, bytes.len() as u64);
        assert!(!scan.torn);
    }

    #[test]
    fn a_torn_last_frame_is_cut_and_everything_before_it_kept() {
        let recs = sample();
        let bytes = segment(&recs);
        let before_last = segment(&recs[..recs.len() - 1]).len();
        for cut in before_last..bytes.len() {
            let scan = read(&bytes[..cut]).unwrap();
            assert_eq!(scan.records, recs[..recs.len() - 1], "cut at {cut}");
            assert_eq!(scan.valid_len, before_last as u64);
            assert_eq!(scan.torn, cut > before_last);
        }
    }

    #[test]
    fn a_flipped_bit_stops_reading_at_its_frame() {
        let recs = sample();
        let bytes = segment(&recs);
        let third = segment(&recs[..2]).len();
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[third + FRAME_HEAD + 1] ^= 1 << bit;
            let scan = read(&bad).unwrap();
            assert_eq!(scan.records, recs[..2]);
            assert!(scan.torn);
        }
    }

    #[test]
    fn foreign_and_newer_files_are_refused() {
        assert_eq!(read(b"nope"), Err(SegmentError::Truncated));
        assert_eq!(read(b"NOTASEGMENT!!"), Err(SegmentError::BadMagic));
        let mut newer = header().to_vec();
        newer[8..].copy_from_slice(&(VERSION + 1).to_le_bytes());
        assert_eq!(read(&newer), Err(SegmentError::NewerVersion(VERSION + 1)));
        assert!(SegmentError::NewerVersion(2)
            .to_string()
            .contains("upgrade"));
    }

    #[test]
    fn a_writer_recovers_a_torn_file_and_appends_after_the_good_part() {
        let dir = std::env::temp_dir().join(format!("escope-seg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s1.seg");
        let _ = std::fs::remove_file(&path);
        let mut w = SegmentWriter::create(&path).unwrap();
        assert!(w.is_empty());
        for r in sample() {
            w.append(&r).unwrap();
        }
        w.sync().unwrap();
        assert_eq!(w.len(), std::fs::metadata(&path).unwrap().len());
        drop(w);
        // A crash mid-frame: half a frame at the end.
        let half = frame(&event(4, &[131, 97, 4]));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&half[..half.len() / 2]).unwrap();
        drop(f);
        let (mut w, extent) = SegmentWriter::recover(&path).unwrap();
        assert_eq!(extent.records, sample().len() as u64);
        assert_eq!((extent.first_seq, extent.last_seq), (1, 3));
        assert!(extent.torn);
        w.append(&event(4, &[131, 97, 4])).unwrap();
        w.flush().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let back = read(&bytes).unwrap();
        assert!(!back.torn);
        assert_eq!(back.records.len(), sample().len() + 1);
        assert!(SegmentWriter::create(&path).is_err(), "never overwrites");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = read(&bytes);
            let mut with_header = header().to_vec();
            with_header.extend_from_slice(&bytes);
            let scan = read(&with_header).unwrap();
            prop_assert!(scan.valid_len as usize <= with_header.len());
        }

        #[test]
        fn mutated_segments_keep_a_prefix_of_their_records(
            at in 0usize..400, byte in any::<u8>(), cut in 0usize..400
        ) {
            let recs = sample();
            let mut bytes = segment(&recs);
            let n = bytes.len();
            bytes[HEADER_LEN + at % (n - HEADER_LEN)] = byte;
            bytes.truncate(n - cut % n);
            if let Ok(scan) = read(&bytes) {
                prop_assert!(scan.records.len() <= recs.len());
                prop_assert_eq!(&scan.records[..], &recs[..scan.records.len()]);
            }
        }
    }

    #[test]
    fn min_event_frame_is_the_smallest_event_frame() {
        let ev = Record::Event {
            seq: 0,
            ts: 0,
            pid: 0,
            peer: 0,
            module: 0,
            function: 0,
            arity: 0,
            kind: 0,
            flags: 0,
            payload: &[],
        };
        assert_eq!(frame(&ev).len() as u64, MIN_EVENT_FRAME);
    }
}
