//! A directory of segments: the current one being written, sealed ones, archived (lz4
//! compressed) ones, and a manifest listing them in order. Rotation by size and age, retention
//! by total size and age.
//!
//! The manifest is replaced atomically (written aside, then renamed), so a crash leaves either
//! the old or the new one; on open, the last segment's torn tail is cut away and its range
//! rebuilt from its frames.

use crate::formats::error::Error;
use crate::persist::segment::{self, Extent, Record, SegmentWriter};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST";

/// When segments rotate and how long they are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Seal the current segment once it holds this many bytes.
    pub segment_bytes: u64,
    /// Seal the current segment once its events span this many nanoseconds.
    pub segment_ns: i64,
    /// Delete the oldest sealed segments while all segments together exceed this.
    pub max_bytes: u64,
    /// Delete sealed segments whose newest event is older than the newest event by more than this.
    pub max_age_ns: i64,
    /// Compress sealed segments (lz4 frames) instead of keeping them raw.
    pub archive: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            segment_bytes: 64 << 20,
            segment_ns: i64::MAX,
            max_bytes: u64::MAX,
            max_age_ns: i64::MAX,
            archive: false,
        }
    }
}

/// What the manifest knows of one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// File name within the directory.
    pub file: String,
    /// Seqs of its first and last events (0 when it has none).
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// Times of its first and last events.
    pub first_ts: i64,
    /// See `first_ts`.
    pub last_ts: i64,
    /// Size of the file.
    pub bytes: u64,
    /// No longer written to.
    pub sealed: bool,
    /// Stored lz4-compressed.
    pub archived: bool,
    /// Where the segment's index footer (a [`Record::Footer`] frame) starts in its raw bytes,
    /// or 0 when it has none (not sealed yet, or sealed by a crash recovery).
    #[serde(default)]
    pub footer_at: u64,
}

/// The list of segments, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of the segments.
    pub version: u32,
    /// Segments in order.
    pub segments: Vec<SegmentMeta>,
    /// Number for the next segment's file name.
    pub next: u64,
}

/// A directory of segments being written.
pub struct Segments {
    dir: PathBuf,
    policy: Policy,
    manifest: Manifest,
    current: SegmentWriter,
    /// Sealed segments being compressed on threads of their own, oldest first.
    archiving: Vec<Archiving>,
}

/// Sealed segments compressed at once at most: past that, a rotation waits for the oldest
/// (compression that cannot keep up with writing slows the writer rather than piling up).
const MAX_ARCHIVING: usize = 2;

/// A sealed segment being compressed into `<file>.lz4`, off the writer's path: the manifest
/// names the raw file (readable meanwhile) until the archive is complete and synced.
struct Archiving {
    file: String,
    job: std::thread::JoinHandle<io::Result<u64>>,
}

/// Compresses the raw segment `file` of `dir` into `<file>.lz4`, synced; its size.
fn compress(dir: &Path, file: &str) -> io::Result<u64> {
    let raw = crate::formats::fsio::read_regular(&dir.join(file), MAX_SEGMENT)?;
    let mut enc =
        lz4_flex::frame::FrameEncoder::new(std::fs::File::create(dir.join(format!("{file}.lz4")))?);
    io::Write::write_all(&mut enc, &raw)?;
    let out = enc.finish().map_err(invalid)?;
    out.sync_all()?;
    Ok(out.metadata()?.len())
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// The largest manifest read (a manifest lists segments: megabytes at most).
const MAX_MANIFEST: u64 = 64 << 20;

/// Reads a directory's manifest (an empty one when there is none).
///
/// # Errors
/// The file system's, or `InvalidData` for an unreadable manifest.
pub fn read_manifest(dir: &Path) -> io::Result<Manifest> {
    let path = dir.join(MANIFEST);
    match crate::formats::fsio::read_regular(&path, MAX_MANIFEST) {
        Ok(bytes) => {
            let m: Manifest = rmp_serde::from_slice(&bytes).map_err(|_| Error::NotATrace {
                path: path.display().to_string(),
            })?;
            if m.version > segment::VERSION {
                return Err(Error::NewerFormat {
                    path: path.display().to_string(),
                    version: m.version,
                }
                .into());
            }
            Ok(m)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Manifest {
            version: segment::VERSION,
            ..Manifest::default()
        }),
        Err(e) => Err(e),
    }
}

/// Reads the manifest of a trace to be read (not written): one that is not there is an error.
///
/// # Errors
/// [`Error::NotATrace`] for one missing or unreadable, [`Error::NewerFormat`], or the file
/// system's.
pub fn read_manifest_strict(dir: &Path) -> Result<Manifest, Error> {
    let path = dir.join(MANIFEST);
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(Error::NotATrace {
            path: dir.display().to_string(),
        });
    }
    read_manifest(dir).map_err(|e| Error::from_io(e, &path))
}

/// A manifest rebuilt from the segment files of `dir` (`00000001.seg`, `00000002.seg.lz4`,
/// ...), in the order of their numbers, for a trace whose manifest is damaged or gone. Their
/// ranges are unknown (0): whoever reads them reads them through. A segment found both raw and
/// archived (a crash while it was being compressed) is taken raw, which is complete. `None`
/// when `dir` holds no segment file.
pub fn rebuild_manifest(dir: &Path) -> Option<Manifest> {
    let mut found: Vec<(u64, String, bool)> = Vec::new();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let (stem, archived) = match name.strip_suffix(".lz4") {
            Some(stem) => (stem, true),
            None => (name.as_str(), false),
        };
        let Some(number) = stem
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((number, name.clone(), archived));
    }
    // Raw before archived for the same number, then one per number.
    found.sort_by_key(|(n, _, archived)| (*n, *archived));
    found.dedup_by_key(|(n, _, _)| *n);
    if found.is_empty() {
        return None;
    }
    let next = found.last().map_or(0, |(n, _, _)| n + 1);
    Some(Manifest {
        version: segment::VERSION,
        segments: found
            .into_iter()
            .map(|(_, file, archived)| SegmentMeta {
                file,
                archived,
                ..SegmentMeta::default()
            })
            .collect(),
        next,
    })
}

/// Where a segment gone from its listed name is now, by the manifest read again (see
/// [`relisted`]).
pub enum Relisted {
    /// Under another name (a running capture archived it).
    As(SegmentMeta),
    /// No longer listed (retention deleted it).
    Gone,
    /// Still listed as it was: the file is lost.
    Same,
}

/// Where the segment `meta` of `dir` is listed now, for a reader that found its file gone: a
/// running capture archives sealed segments (a new name, the same first seq) and deletes old
/// ones.
pub fn relisted(dir: &Path, meta: &SegmentMeta) -> Relisted {
    let Ok(manifest) = read_manifest(dir) else {
        return Relisted::Same;
    };
    if let Some(now) = manifest
        .segments
        .iter()
        .find(|m| meta.first_seq != 0 && m.first_seq == meta.first_seq && m.file != meta.file)
    {
        return Relisted::As(now.clone());
    }
    if manifest.segments.iter().any(|m| m.file == meta.file) {
        Relisted::Same
    } else {
        Relisted::Gone
    }
}

/// The bytes of one segment of a directory, decompressing an archived one (read them with
/// [`segment::frames`]).
///
/// # Errors
/// As for [`read_segment_into`].
pub fn read_segment(dir: &Path, meta: &SegmentMeta) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    read_segment_into(dir, meta, &mut out)?;
    Ok(out)
}

/// The largest segment read (raw or decompressed): what a file claims is never trusted to fit
/// in memory.
pub const MAX_SEGMENT: u64 = 4 << 30;

/// Reads one segment's bytes into `out` (replacing its contents, reusing its memory).
///
/// # Errors
/// The file system's; `InvalidData` for an archive that does not decompress or a segment over
/// [`MAX_SEGMENT`] bytes.
pub fn read_segment_into(dir: &Path, meta: &SegmentMeta, out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    let path = dir.join(&meta.file);
    let file = crate::formats::fsio::open_regular(&path)?;
    let read = if meta.archived {
        let dec = lz4_flex::frame::FrameDecoder::new(io::BufReader::new(file));
        io::Read::read_to_end(&mut io::Read::take(dec, MAX_SEGMENT + 1), out).map_err(invalid)?
    } else {
        io::Read::read_to_end(&mut io::Read::take(file, MAX_SEGMENT + 1), out)?
    };
    if read as u64 > MAX_SEGMENT {
        out.clear();
        return Err(invalid(format!(
            "{}: segment larger than {MAX_SEGMENT} bytes",
            meta.file
        )));
    }
    Ok(())
}

impl Segments {
    /// The trace directory written.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens (or creates) the segment directory `dir`, recovering its last segment.
    ///
    /// # Errors
    /// The file system's, or `InvalidData` when the directory holds something unreadable.
    pub fn open(dir: &Path, policy: Policy) -> io::Result<Segments> {
        std::fs::create_dir_all(dir)?;
        let mut manifest = read_manifest(dir)?;
        let current = match manifest.segments.last_mut() {
            Some(last) if !last.sealed => {
                let (writer, extent) = SegmentWriter::recover(&dir.join(&last.file))?;
                if extent.first_seq != 0 {
                    last.set_range(&extent);
                }
                last.bytes = writer.len();
                writer
            }
            _ => new_segment(dir, &mut manifest)?,
        };
        let s = Segments {
            dir: dir.to_path_buf(),
            policy,
            manifest,
            current,
            archiving: Vec::new(),
        };
        s.save_manifest()?;
        Ok(s)
    }

    /// Appends a record to the current segment, then rotates and applies retention when the
    /// policy says so. Returns whether it rotated (the next record starts a new segment).
    ///
    /// # Errors
    /// The file system's.
    pub fn append(&mut self, record: &Record) -> io::Result<bool> {
        self.push(record)?;
        if self.should_rotate() {
            self.rotate(None)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Appends a record to the current segment, never rotating.
    ///
    /// # Errors
    /// The file system's.
    pub fn push(&mut self, record: &Record) -> io::Result<()> {
        let bytes = self.current.append(record)?;
        let meta = self.current_meta();
        let mut range = meta.range();
        range.add(record);
        meta.set_range(&range);
        meta.bytes = bytes;
        Ok(())
    }

    /// The current segment's length in bytes (where the next frame starts).
    pub fn current_len(&self) -> u64 {
        self.current.len()
    }

    /// Whether the current segment is full by the policy (size, or the time its events span).
    pub fn should_rotate(&self) -> bool {
        let meta = &self.manifest.segments[self.manifest.segments.len() - 1];
        let too_old = meta.last_ts.saturating_sub(meta.first_ts) >= self.policy.segment_ns;
        meta.bytes >= self.policy.segment_bytes || (meta.first_seq != 0 && too_old)
    }

    /// Ends the current segment with `footer` (if given) and marks it sealed, on disk.
    fn close_current(&mut self, footer: Option<&Record>) -> io::Result<()> {
        if let Some(f) = footer {
            let at = self.current.len();
            match self.push(f) {
                Ok(()) => self.current_meta().footer_at = at,
                // Too large to read back: the segment is read through, like one without.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
                Err(e) => return Err(e),
            }
        }
        self.current.sync()?;
        self.current_meta().sealed = true;
        Ok(())
    }

    /// Flushes and seals the current segment for good, ending it with `footer` (no new one is
    /// started): what a finished capture or a saved trace ends with.
    ///
    /// # Errors
    /// The file system's.
    pub fn seal(mut self, footer: Option<&Record>) -> io::Result<Manifest> {
        self.close_current(footer)?;
        self.settle_archives(0)?;
        self.save_manifest()?;
        Ok(self.manifest)
    }

    /// Seals the current segment, ending it with `footer` (if given) and archiving it if the
    /// policy says so, starts a new one and applies retention.
    ///
    /// # Errors
    /// The file system's.
    pub fn rotate(&mut self, footer: Option<&Record>) -> io::Result<()> {
        self.close_current(footer)?;
        if self.policy.archive {
            self.settle_archives(MAX_ARCHIVING - 1)?;
            let file = self.current_meta().file.clone();
            let dir = self.dir.clone();
            let name = file.clone();
            let job = std::thread::Builder::new()
                .name("elixir_scope_archive".into())
                .spawn(move || compress(&dir, &name))?;
            self.archiving.push(Archiving { file, job });
        }
        self.current = new_segment(&self.dir, &mut self.manifest)?;
        // With archives being made, retention waits for them to land: counted raw, they would
        // make it delete more than the archived trace takes.
        if self.archiving.is_empty() {
            self.retain()?;
        }
        self.save_manifest()
    }

    /// Waits until every sealed segment is archived (when the policy archives), the manifest
    /// naming the archives.
    ///
    /// # Errors
    /// The file system's, saving the manifest.
    pub fn wait_archives(&mut self) -> io::Result<()> {
        self.settle_archives(0)
    }

    /// Takes the archives finished by now into the manifest, waiting for the oldest until at
    /// most `pending` are left. An archive replaces its raw segment in the manifest (saved)
    /// before the raw file is deleted; one whose segment retention deleted meanwhile is
    /// deleted too. A compression that failed leaves its segment raw (still whole), and its
    /// partial archive is deleted.
    ///
    /// # Errors
    /// The file system's, saving the manifest.
    fn settle_archives(&mut self, pending: usize) -> io::Result<()> {
        let mut i = 0;
        while i < self.archiving.len() {
            let must_wait = self.archiving.len() > pending && i == 0;
            if !must_wait && !self.archiving[i].job.is_finished() {
                i += 1;
                continue;
            }
            let Archiving { file, job } = self.archiving.remove(i);
            let archive = self.dir.join(format!("{file}.lz4"));
            let result = job
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("archive thread panicked")));
            let listed = self.manifest.segments.iter().position(|m| m.file == file);
            match (result, listed) {
                (Ok(bytes), Some(k)) => {
                    let meta = &mut self.manifest.segments[k];
                    meta.file = format!("{file}.lz4");
                    meta.bytes = bytes;
                    meta.archived = true;
                    self.save_manifest()?;
                    let _ = std::fs::remove_file(self.dir.join(&file));
                    self.retain()?;
                }
                _ => {
                    let _ = std::fs::remove_file(archive);
                }
            }
        }
        Ok(())
    }

    /// Deletes the oldest sealed segments beyond the policy's total size and age.
    fn retain(&mut self) -> io::Result<()> {
        // Times are monotonic nanoseconds, usually negative: only segments holding events count
        // (a new segment's range is all zeros).
        let Some(newest) = self
            .manifest
            .segments
            .iter()
            .filter(|m| m.first_seq != 0)
            .map(|m| m.last_ts)
            .max()
        else {
            return Ok(());
        };
        loop {
            let total: u64 = self.manifest.segments.iter().map(|m| m.bytes).sum();
            let Some(oldest) = self.manifest.segments.first() else {
                break;
            };
            let expired = oldest.first_seq != 0
                && newest.saturating_sub(oldest.last_ts) > self.policy.max_age_ns;
            if !oldest.sealed || (total <= self.policy.max_bytes && !expired) {
                break;
            }
            let gone = self.manifest.segments.remove(0);
            self.save_manifest()?;
            std::fs::remove_file(self.dir.join(gone.file))?;
        }
        Ok(())
    }

    /// Hands written frames to the OS and records the current segment's state.
    ///
    /// # Errors
    /// The file system's.
    pub fn flush(&mut self) -> io::Result<()> {
        self.current.flush()?;
        // Archives finished since, without waiting for any (this saves the manifest anyway).
        self.settle_archives(usize::MAX)?;
        self.save_manifest()
    }

    /// The manifest as it stands.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn current_meta(&mut self) -> &mut SegmentMeta {
        // `open` and `rotate` always leave the current segment last in the manifest.
        let last = self.manifest.segments.len() - 1;
        &mut self.manifest.segments[last]
    }

    fn save_manifest(&self) -> io::Result<()> {
        let tmp = self.dir.join(format!("{MANIFEST}.tmp"));
        let bytes = rmp_serde::to_vec(&self.manifest).map_err(invalid)?;
        let mut f = std::fs::File::create(&tmp)?;
        io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
        std::fs::rename(tmp, self.dir.join(MANIFEST))
    }
}

fn new_segment(dir: &Path, manifest: &mut Manifest) -> io::Result<SegmentWriter> {
    // A crash between creating a segment and saving the manifest leaves a file the manifest
    // does not list: its number is skipped, the file left alone.
    let (file, writer) = loop {
        let file = format!("{:08}.seg", manifest.next);
        manifest.next += 1;
        match SegmentWriter::create(&dir.join(&file)) {
            Ok(w) => break (file, w),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    manifest.segments.push(SegmentMeta {
        file,
        bytes: writer.len(),
        ..SegmentMeta::default()
    });
    Ok(writer)
}

impl SegmentMeta {
    /// The seqs and times its events span, as an [`Extent`] (to widen with [`Extent::add`]).
    fn range(&self) -> Extent {
        Extent {
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            ..Extent::default()
        }
    }

    fn set_range(&mut self, e: &Extent) {
        (self.first_seq, self.first_ts) = (e.first_seq, e.first_ts);
        (self.last_seq, self.last_ts) = (e.last_seq, e.last_ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: [u8; 46] = {
        let mut p = [7u8; 46];
        (p[0], p[1], p[2], p[3], p[4], p[5]) = (131, 109, 0, 0, 0, 40);
        p
    };

    fn event(seq: u64, ts: i64) -> Record<'static> {
        Record::Event {
            seq,
            ts,
            pid: 3,
            peer: 0,
            module: 0,
            function: 0,
            arity: 0,
            kind: 8,
            flags: 0,
            payload: &PAYLOAD,
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("escope-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A segment directory holding events 1..=n (time = seq), flushed.
    fn filled(dir: &Path, policy: Policy, n: u64) -> Segments {
        let mut s = Segments::open(dir, policy).unwrap();
        for i in 1..=n {
            s.append(&event(i, i as i64)).unwrap();
        }
        s.flush().unwrap();
        s
    }

    fn all_events(dir: &Path) -> Vec<u64> {
        let m = read_manifest(dir).unwrap();
        m.segments
            .iter()
            .flat_map(|s| {
                let bytes = read_segment(dir, s).unwrap();
                segment::frames(&bytes)
                    .unwrap()
                    .filter_map(|r| match r {
                        Record::Event { seq, .. } => Some(seq),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn rotates_by_size_and_keeps_every_event_in_order() {
        let dir = temp("rotate");
        let policy = Policy {
            segment_bytes: 1_000,
            ..Policy::default()
        };
        let s = filled(&dir, policy, 100);
        let m = s.manifest().clone();
        assert!(m.segments.len() > 5);
        assert!(m.segments[..m.segments.len() - 1]
            .iter()
            .all(|x| x.sealed && x.bytes >= 1_000));
        assert_eq!(all_events(&dir), (1..=100).collect::<Vec<_>>());
        // Reopening continues where it stopped.
        drop(s);
        let mut s = Segments::open(&dir, policy).unwrap();
        s.append(&event(101, 101)).unwrap();
        s.flush().unwrap();
        assert_eq!(all_events(&dir), (1..=101).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn retention_by_size_and_age_drops_the_oldest_sealed_segments() {
        let dir = temp("retain");
        let by_size = Policy {
            segment_bytes: 1_000,
            max_bytes: 3_500,
            ..Policy::default()
        };
        let s = filled(&dir, by_size, 200);
        let kept = all_events(&dir);
        let total: u64 = s.manifest().segments.iter().map(|m| m.bytes).sum();
        assert!(total <= 3_500 + 1_100, "{total}");
        assert_eq!(*kept.last().unwrap(), 200);
        assert!(kept[0] > 1);
        assert_eq!(kept, (kept[0]..=200).collect::<Vec<_>>());
        drop(s);

        let dir2 = temp("age");
        let by_age = Policy {
            segment_bytes: 1_000,
            max_age_ns: 50,
            ..Policy::default()
        };
        filled(&dir2, by_age, 200);
        let kept = all_events(&dir2);
        assert!(kept[0] >= 200 - 50 - 30, "{}", kept[0]);
        assert!(kept[0] < 200 - 50, "{}: keeps what is not expired", kept[0]);

        // Monotonic time is usually negative, and a fresh segment has no events yet.
        let dir3 = temp("age-negative");
        let mut s = Segments::open(&dir3, by_age).unwrap();
        for i in 1..=200u64 {
            s.append(&event(i, i as i64 - 1_000_000)).unwrap();
        }
        s.flush().unwrap();
        let kept = all_events(&dir3);
        assert!((200 - 50 - 30..200 - 50).contains(&kept[0]), "{}", kept[0]);
        std::fs::remove_dir_all(&dir3).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&dir2).unwrap();
    }

    #[test]
    fn archived_segments_are_compressed_and_read_back() {
        let dir = temp("archive");
        let policy = Policy {
            segment_bytes: 2_000,
            archive: true,
            ..Policy::default()
        };
        let mut s = filled(&dir, policy, 100);
        s.wait_archives().unwrap();
        let m = s.manifest().clone();
        let sealed: Vec<_> = m.segments.iter().filter(|x| x.sealed).collect();
        assert!(sealed
            .iter()
            .all(|x| x.archived && x.file.ends_with(".lz4")));
        assert!(sealed.iter().all(|x| x.bytes < 1_000), "compressed");
        assert!(sealed
            .iter()
            .all(|x| !dir.join(x.file.trim_end_matches(".lz4")).exists()));
        assert_eq!(all_events(&dir), (1..=100).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn archiving_runs_off_the_writer_and_leaves_only_listed_files() {
        let dir = temp("archive-async");
        let policy = Policy {
            segment_bytes: 2_000,
            archive: true,
            // Retention deletes segments while their archives are being made.
            max_bytes: 6_000,
            ..Policy::default()
        };
        let mut s = Segments::open(&dir, policy).unwrap();
        for i in 1..=2_000 {
            s.append(&event(i, i as i64)).unwrap();
            if i % 97 == 0 {
                s.flush().unwrap();
                // Whatever is listed is readable at any moment: raw or archived.
                let m = read_manifest(&dir).unwrap();
                for seg in &m.segments {
                    read_segment(&dir, seg).unwrap();
                }
            }
        }
        s.flush().unwrap();
        s.wait_archives().unwrap();
        let m = s.manifest().clone();
        let sealed: Vec<_> = m.segments.iter().filter(|x| x.sealed).collect();
        assert!(!sealed.is_empty() && sealed.iter().all(|x| x.archived));
        // No file but the manifest and the segments it lists: no raw file left behind by an
        // archive, no archive of a segment retention deleted.
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f != MANIFEST)
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = m.segments.iter().map(|x| x.file.clone()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        let events = all_events(&dir);
        assert_eq!(events.last(), Some(&2_000));
        assert!(events.windows(2).all(|w| w[1] == w[0] + 1), "gapless");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_current_segment_is_recovered_on_open() {
        let dir = temp("torn");
        let s = filled(&dir, Policy::default(), 10);
        let file = dir.join(&s.manifest().segments[0].file);
        drop(s);
        let half = segment::frame(&event(11, 11));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        io::Write::write_all(&mut f, &half[..half.len() - 3]).unwrap();
        drop(f);
        let s = Segments::open(&dir, Policy::default()).unwrap();
        assert_eq!(s.manifest().segments[0].last_seq, 10);
        assert_eq!(all_events(&dir), (1..=10).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_footer_too_large_to_read_back_is_left_out() {
        let dir = temp("huge-footer");
        let s = filled(&dir, Policy::default(), 10);
        let etf = vec![0u8; segment::MAX_RECORD];
        let huge = Record::Symbol { word: 1, etf: &etf };
        let m = s.seal(Some(&huge)).unwrap();
        // Sealed without a footer (read through), every event kept, nothing torn.
        assert!(m.segments[0].sealed && m.segments[0].footer_at == 0);
        assert_eq!(all_events(&dir), (1..=10).collect::<Vec<_>>());
        let bytes = read_segment(&dir, &m.segments[0]).unwrap();
        let mut frames = segment::frames(&bytes).unwrap();
        assert_eq!(frames.by_ref().count(), 10);
        assert!(!frames.torn());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
