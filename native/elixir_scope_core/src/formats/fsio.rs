//! Opening files that could be anything.
//!
//! A trace directory comes from users and from other machines: any name in it may be a FIFO, a
//! device or a socket, and opening a FIFO for reading blocks until a writer appears — forever,
//! on a dirty I/O scheduler, which a caller cannot interrupt. So every file the core reads is
//! opened without blocking (`O_NONBLOCK`, which changes nothing for a regular file), checked on
//! the open handle (no race with a rename), and refused unless it is a regular file.

use crate::formats::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// Opens `path` for reading if it is a regular file.
///
/// # Errors
/// [`Error::NotARegularFile`] for anything else (nothing is read from it), [`Error::NotFound`]
/// or [`Error::Io`] naming `path`, all inside the `io::Error`.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(nonblocking_flag());
    }
    let file = opts.open(path).map_err(|e| Error::at(e, path))?;
    let meta = file.metadata().map_err(|e| Error::at(e, path))?;
    if !meta.is_file() {
        return Err(Error::NotARegularFile {
            path: path.display().to_string(),
        }
        .into());
    }
    Ok(file)
}

/// The whole of the regular file `path`, at most `max` bytes (more is [`Error::Corrupt`]: no
/// file of a trace is trusted to fit in memory because it says so).
///
/// # Errors
/// As [`open_regular`]; read errors name `path`.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut out = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::at(e, path))?;
    if out.len() as u64 > max {
        return Err(Error::Corrupt {
            path: path.display().to_string(),
            offset: max,
        }
        .into());
    }
    Ok(out)
}

#[cfg(all(unix, target_os = "linux"))]
fn nonblocking_flag() -> i32 {
    libc::O_NONBLOCK
}

#[cfg(all(unix, not(target_os = "linux")))]
fn nonblocking_flag() -> i32 {
    // O_NONBLOCK on the BSDs and macOS.
    0x0004
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("escope-fsio-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_regular_file_reads_whole() {
        let dir = temp("regular");
        let f = dir.join("f");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read_regular(&f, 5).unwrap(), b"hello");
        let e = Error::from_io(read_regular(&f, 4).unwrap_err(), &dir);
        assert!(matches!(e, Error::Corrupt { offset: 4, .. }), "{e:?}");
    }

    #[test]
    fn a_directory_or_missing_file_is_refused_with_its_path() {
        let dir = temp("dir");
        let e = Error::from_io(open_regular(&dir).unwrap_err(), Path::new("x"));
        assert_eq!(
            e,
            Error::NotARegularFile {
                path: dir.display().to_string()
            }
        );
        let missing = dir.join("missing");
        let e = Error::from_io(open_regular(&missing).unwrap_err(), Path::new("x"));
        assert_eq!(
            e,
            Error::NotFound {
                path: missing.display().to_string()
            }
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = temp("fifo");
        let fifo = dir.join("MANIFEST");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = Error::from_io(read_regular(&fifo, 100).unwrap_err(), Path::new("x"));
        assert!(matches!(e, Error::NotARegularFile { .. }), "{e:?}");
    }
}
