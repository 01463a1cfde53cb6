//! One file a task's run changed, and how: what a result lists, from git's diff of the work
//! against its base.

use serde::{Deserialize, Serialize};

/// One file the run changed, as `git diff --numstat` reports it (binary files have no counts),
/// and how (`git diff --raw`): the counts alone cannot tell a new empty file, an emptied one, a
/// deleted one and a mode change apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    pub added: Option<u64>,
    pub removed: Option<u64>,
    /// Absent from a report of a worker that predates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<FileStatus>,
    /// The file's mode before and after (`100644 -> 100755`), when the run changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_change: Option<String>,
}

impl FileChange {
    /// A change of `path` with these line counts and nothing more known of it.
    pub fn counted(path: impl Into<String>, added: Option<u64>, removed: Option<u64>) -> Self {
        Self {
            path: path.into(),
            added,
            removed,
            status: None,
            mode_change: None,
        }
    }

    /// What a reader should be told besides the counts: "new", "deleted", "type changed"
    /// (a file became a link, say), "mode 100644 -> 100755"; `None` for an edit.
    pub fn note(&self) -> Option<String> {
        match (self.status, &self.mode_change) {
            (Some(FileStatus::Added), _) => Some("new".into()),
            (Some(FileStatus::Deleted), _) => Some("deleted".into()),
            (Some(FileStatus::TypeChanged), _) => Some("type changed".into()),
            (_, Some(m)) => Some(format!("mode {m}")),
            _ => None,
        }
    }
}

/// How a run changed a file, as git's diff letters say (`A`, `M`, `D`, `T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Added,
    Modified,
    Deleted,
    /// It is another kind of file than it was: a regular file became a symbolic link or a
    /// submodule, or the other way round.
    TypeChanged,
}

crate::enum_names!(FileStatus, UnknownFileStatus("file status") {
    Added => "added",
    Modified => "modified",
    Deleted => "deleted",
    TypeChanged => "type_changed",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_says_what_its_counts_cannot() {
        let mut f = FileChange::counted("run.sh", Some(0), Some(0));
        assert_eq!(f.note(), None, "nothing more known");
        f.mode_change = Some("100644 -> 100755".into());
        f.status = Some(FileStatus::Modified);
        assert_eq!(f.note().as_deref(), Some("mode 100644 -> 100755"));
        f.status = Some(FileStatus::Added);
        assert_eq!(f.note().as_deref(), Some("new"));
        f.status = Some(FileStatus::Deleted);
        assert_eq!(f.note().as_deref(), Some("deleted"));
        // An older worker's report has neither field, and reads as before.
        let old: FileChange = serde_json::from_str(r#"{"path":"a","added":1,"removed":0}"#).unwrap();
        assert_eq!(old, FileChange::counted("a", Some(1), Some(0)));
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"path":"a","added":1,"removed":0}"#
        );
    }
}
