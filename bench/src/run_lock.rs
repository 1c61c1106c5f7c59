//! One measured run at a time on a machine: a run started while another is
//! going would measure both at half speed. `--spawn` runs take an exclusive
//! lock on a file in the temporary directory and wait for it; the lock goes
//! with the process, also when it dies.

use std::{fs::File, path::PathBuf};

/// The lock file every run on this machine shares.
pub fn path() -> PathBuf {
    std::env::temp_dir().join("webhooks-bench.lock")
}

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Takes the lock, waiting (and saying so) while another run holds it.
pub async fn acquire() -> std::io::Result<RunLock> {
    let file = File::options().create(true).truncate(false).write(true).open(path())?;
    match file.try_lock() {
        Ok(()) => return Ok(RunLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => {
            eprintln!("waiting for another webhooks-bench run to end (lock {})", path().display());
        }
        Err(std::fs::TryLockError::Error(err)) => return Err(err),
    }
    let file =
        tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await.map_err(std::io::Error::other)??;
    Ok(RunLock { _file: file })
}
