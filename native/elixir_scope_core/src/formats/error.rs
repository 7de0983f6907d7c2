//! The core's one error type.
//!
//! File I/O inside the core returns `std::io::Result` (it composes with readers and writers);
//! an [`Error`] travels inside an `io::Error` (`io::Error::from(Error)`) and comes out again,
//! with a path for any plain OS error, through [`Error::from_io`] at the boundary.

use std::io;
use std::path::Path;

/// Everything that can go wrong in the core. Each variant maps to a stable atom or tagged tuple
/// at the NIF boundary (never to this text, which is for Rust callers and logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option is outside its allowed range.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// What is allowed.
        reason: String,
    },
    /// A file or directory that is not there.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// A path that is neither a regular file nor a directory (a FIFO, a device, a socket):
    /// refused before any read, which could block forever.
    #[error("{path}: not a regular file")]
    NotARegularFile {
        /// The path asked for.
        path: String,
    },
    /// Any other error of the file system, by its POSIX name (`eacces`, `enospc`, `eio`, ...).
    #[error("{path}: {posix}")]
    Io {
        /// The file or directory.
        path: String,
        /// The POSIX name of the error.
        posix: &'static str,
    },
    /// A file that is not an ElixirScope segment or manifest.
    #[error("{path}: not an ElixirScope trace file")]
    NotATrace {
        /// The file.
        path: String,
    },
    /// A file written by a newer ElixirScope.
    #[error("{path}: format version {version} is newer than this ElixirScope reads; upgrade it")]
    NewerFormat {
        /// The file.
        path: String,
        /// Its format version.
        version: u32,
    },
    /// Damaged bytes: a frame or archive that does not read.
    #[error("{path}: damaged at byte {offset}")]
    Corrupt {
        /// The file.
        path: String,
        /// Where the damage starts.
        offset: u64,
    },
    /// A directory that already holds a trace, given to something that writes a new one.
    #[error("{path} already holds a trace")]
    TraceExists {
        /// The directory.
        path: String,
    },
    /// A store already being written to disk.
    #[error("the store is already being persisted")]
    AlreadyPersisted,
    /// A one-shot job (a load, a summary) asked to finish twice.
    #[error("this was already done")]
    AlreadyDone,
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e {
            Error::NotFound { .. } => io::ErrorKind::NotFound,
            Error::NotATrace { .. } | Error::Corrupt { .. } | Error::NewerFormat { .. } => {
                io::ErrorKind::InvalidData
            }
            Error::TraceExists { .. } => io::ErrorKind::AlreadyExists,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

impl Error {
    /// The [`Error`] an `io::Error` carries, or one made of its kind and `path` (the file the
    /// caller was working on, when the error does not name one).
    pub fn from_io(e: io::Error, path: &Path) -> Error {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Some(inner) = e.into_inner().and_then(|b| b.downcast::<Error>().ok()) {
                return *inner;
            }
            unreachable_io(path)
        } else if let Some(posix) = e.raw_os_error().and_then(posix_name) {
            let path = path.display().to_string();
            match posix {
                "enoent" => Error::NotFound { path },
                _ => Error::Io { path, posix },
            }
        } else {
            Error::of_kind(e.kind(), path)
        }
    }

    /// An `io::Error` carrying the [`Error`] for `e` at `path`: a typed error stays as it is,
    /// a plain OS error gets the path it happened at.
    pub fn at(e: io::Error, path: &Path) -> io::Error {
        Error::from_io(e, path).into()
    }

    fn of_kind(kind: io::ErrorKind, path: &Path) -> Error {
        let path = path.display().to_string();
        use io::ErrorKind as K;
        let posix = match kind {
            K::NotFound => return Error::NotFound { path },
            K::PermissionDenied => "eacces",
            K::AlreadyExists => "eexist",
            K::StorageFull => "enospc",
            K::ReadOnlyFilesystem => "erofs",
            K::NotADirectory => "enotdir",
            K::IsADirectory => "eisdir",
            K::DirectoryNotEmpty => "enotempty",
            K::QuotaExceeded => "edquot",
            K::FileTooLarge => "efbig",
            K::UnexpectedEof => return Error::Corrupt { path, offset: 0 },
            K::InvalidData => return Error::NotATrace { path },
            K::OutOfMemory => "enomem",
            K::Interrupted => "eintr",
            K::WouldBlock => "eagain",
            _ => "eio",
        };
        Error::Io { path, posix }
    }
}

/// The POSIX name of an OS error number, for the common ones.
#[cfg(target_os = "linux")]
fn posix_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::ENOENT => "enoent",
        libc::EACCES => "eacces",
        libc::EPERM => "eperm",
        libc::EEXIST => "eexist",
        libc::ENOSPC => "enospc",
        libc::EDQUOT => "edquot",
        libc::EROFS => "erofs",
        libc::ENOTDIR => "enotdir",
        libc::EISDIR => "eisdir",
        libc::ENOTEMPTY => "enotempty",
        libc::EMFILE => "emfile",
        libc::ENFILE => "enfile",
        libc::ENAMETOOLONG => "enametoolong",
        libc::ELOOP => "eloop",
        libc::EXDEV => "exdev",
        libc::EBUSY => "ebusy",
        libc::EFBIG => "efbig",
        libc::ENOMEM => "enomem",
        libc::EINTR => "eintr",
        libc::EAGAIN => "eagain",
        libc::EIO => "eio",
        _ => return None,
    })
}

#[cfg(not(target_os = "linux"))]
fn posix_name(_errno: i32) -> Option<&'static str> {
    None
}

#[cold]
fn unreachable_io(path: &Path) -> Error {
    Error::Io {
        path: path.display().to_string(),
        posix: "eio",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_error_survives_the_trip_through_io_error() {
        let e = Error::Corrupt {
            path: "a.seg".into(),
            offset: 42,
        };
        let io: io::Error = e.clone().into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert_eq!(Error::from_io(io, Path::new("elsewhere")), e);
    }

    #[test]
    fn a_plain_os_error_gets_the_path_and_its_posix_name() {
        let io = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            Error::from_io(io, Path::new("/t/MANIFEST")),
            Error::Io {
                path: "/t/MANIFEST".into(),
                posix: "eacces"
            }
        );
        let io = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(
            Error::from_io(io, Path::new("/nope")),
            Error::NotFound {
                path: "/nope".into()
            }
        );
    }
}
