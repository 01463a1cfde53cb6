//! A worker's id when none is given: kept in its work directory, so that a worker restarted
//! on the same directory (after a crash, an upgrade, a reboot) registers under the same id
//! and the server releases what its previous life held at once, instead of after the lease.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use agentpool_core::WorkerId;

/// The file in the work directory's state that holds the id and the host it was made on.
const FILE: &str = "worker-id";

/// The id a worker without `--id` runs under, and the open file whose lock keeps it this
/// process's own while the worker runs (drop it when the worker stops).
#[derive(Debug)]
pub(super) struct Identity {
    pub id: WorkerId,
    pub _lock: Option<File>,
}

/// The id kept in `state_dir` for this host, made and kept there on first use.
///
/// Two rules keep one id from ever standing for two live workers, which would let one's
/// registration release the other's tasks while they run:
/// - the file is locked (`flock`) for the worker's life; a second worker started on the same
///   directory while the first runs gets an id of its own, kept nowhere;
/// - the file names the host it was made on; copied to another host (an image, a cloned
///   disk), it is not reused there but replaced.
///
/// Where the directory cannot be written the worker still runs, under a new id each start,
/// and says why.
pub(super) fn stable(state_dir: &Path, hostname: &str) -> Identity {
    match kept(state_dir, hostname) {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            tracing::info!(
                dir = %state_dir.display(),
                "another worker runs on this work directory; this one runs under an id of its own"
            );
            fresh(hostname)
        }
        Err(e) => {
            tracing::warn!(
                dir = %state_dir.display(),
                error = %e,
                "cannot keep the worker id in the work directory; a restart will register as a new worker"
            );
            fresh(hostname)
        }
    }
}

fn fresh(hostname: &str) -> Identity {
    Identity {
        id: WorkerId::generate(hostname),
        _lock: None,
    }
}

/// `Ok(None)` when another process holds the file.
fn kept(state_dir: &Path, hostname: &str) -> std::io::Result<Option<Identity>> {
    std::fs::create_dir_all(state_dir)?;
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(state_dir.join(FILE))?;
    // SAFETY: flock on a descriptor we own; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => Ok(None),
            _ => Err(e),
        };
    }
    // Read as bytes: a damaged file is replaced below, not an error at every start.
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let id = match parse(&String::from_utf8_lossy(&bytes), hostname) {
        Some(id) => id,
        None => {
            let id = WorkerId::generate(hostname);
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{id}\n{hostname}")?;
            file.sync_all()?;
            id
        }
    };
    Ok(Some(Identity {
        id,
        _lock: Some(file),
    }))
}

/// The id the file keeps, when it was made on this host.
fn parse(text: &str, hostname: &str) -> Option<WorkerId> {
    let mut lines = text.lines();
    let id = WorkerId::parse(lines.next()?.trim().to_string()).ok()?;
    (lines.next()?.trim() == hostname).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_kept_across_starts_on_one_host_and_held_by_one_worker_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = stable(dir.path(), "host-a");
        assert!(first.id.as_str().starts_with("host-a-"), "{}", first.id);
        // While the first holds it, a second worker on the directory runs under another id.
        let second = stable(dir.path(), "host-a");
        assert_ne!(second.id, first.id);
        assert!(second._lock.is_none());
        let id = first.id.clone();
        drop(first);
        assert_eq!(stable(dir.path(), "host-a").id, id, "a restart takes the same id");
    }

    #[test]
    fn a_file_from_another_host_or_unreadable_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let a = stable(dir.path(), "host-a").id;
        let b = stable(dir.path(), "host-b");
        assert_ne!(b.id, a, "a copied directory is not another host's identity");
        assert!(b.id.as_str().starts_with("host-b-"));
        let Identity { id: b, _lock } = b;
        drop(_lock);
        assert_eq!(stable(dir.path(), "host-b").id, b);
        std::fs::write(dir.path().join(FILE), b"not an id!\n\xff\n").unwrap();
        let c = stable(dir.path(), "host-b").id;
        assert_ne!(c, b);
        assert_eq!(stable(dir.path(), "host-b").id, c);
    }
}
