//! A task's private directories (its workspace's and its credentials'), removed at its end.

use crate::private::PrivateDir;

/// A task's private directories (crate::private): its workspace's and its credentials'.
#[derive(Default)]
pub(super) struct TaskDirs {
    pub(super) workspace: Option<PrivateDir>,
    pub(super) credentials: Option<PrivateDir>,
}

impl TaskDirs {
    /// Remove both at the task's end (the workspace stays when the worker keeps workspaces).
    pub(super) async fn remove(self, keep_workspace: bool) {
        if let Some(c) = self.credentials {
            c.remove().await;
        }
        if let Some(w) = self.workspace {
            if keep_workspace {
                let path = w.keep();
                tracing::info!(path = %path.display(), "workspace kept");
            } else {
                w.remove().await;
            }
        }
    }
}
