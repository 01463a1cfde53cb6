//! The database file under a running store. Deleted or replaced (a data directory removed by
//! hand, a backup copied over it), SQLite goes on writing into the old file, which nothing will
//! read again: every task submitted from then on would be lost without a word. So each write
//! transaction first checks that the path still names the file the store opened; when it does
//! not, the write is refused as "database unavailable" (HTTP 503) and the cause is logged once.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Result, StoreError};

/// The identity (device and inode) of the file a store opened.
#[derive(Debug)]
pub(super) struct FileWatch {
    path: PathBuf,
    dev: u64,
    ino: u64,
    told: AtomicBool,
}

impl FileWatch {
    /// Watch the file at `path` as it is now.
    pub(super) fn new(path: &Path) -> io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            told: AtomicBool::new(false),
        })
    }

    /// Ok while the path names the file the store opened. One `stat`: cheap beside the
    /// transaction it guards.
    pub(super) fn check(&self) -> Result<()> {
        let same = std::fs::metadata(&self.path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if same {
            return Ok(());
        }
        if !self.told.swap(true, Ordering::Relaxed) {
            tracing::error!(
                file = %self.path.display(),
                "the database file was deleted or replaced while agentpool runs: nothing more is \
                 written to it, and every change is refused until agentpool is restarted on a \
                 database file in place"
            );
        }
        Err(StoreError::Database(sqlx::Error::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the database file {} was deleted or replaced",
                self.path.display()
            ),
        ))))
    }
}
