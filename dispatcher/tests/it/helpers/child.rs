//! Dispatchers run as the real binary: signals and exits.

use std::{
    process::{Child, Command},
    time::Duration,
};

use shared::testing::eventually;

/// Sends SIGTERM (or SIGKILL) to a child process.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill {signal} failed");
}

/// Waits for a child to exit, up to `timeout`.
pub async fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let found = eventually(timeout, || {
        let status = child.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    match found {
        Some(status) => status,
        None => {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
    }
}

/// Kills a child when dropped (so a failing test leaves no dispatcher behind).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
