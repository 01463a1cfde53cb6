//! The per-attempt file: what `agentpool run-task` needs to take over one claimed attempt
//! (the claim with its lease and credentials, and the worker id that holds it). In Kubernetes
//! it is the one key of the attempt's Secret, mounted read-only into the pod.

use agentpool_core::WorkerId;
use agentpool_runner::ClaimedWork;
use serde::{Deserialize, Serialize};

/// The key of the attempt Secret (and the file name where the pod sees it).
pub const ATTEMPT_KEY: &str = "attempt.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptFile {
    /// The worker that claimed the attempt; heartbeats and reports go out under its id.
    pub worker_id: WorkerId,
    pub work: ClaimedWork,
}

#[derive(Debug, thiserror::Error)]
pub enum AttemptFileError {
    #[error("cannot read the attempt file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// Only where the file went wrong: serde_json's own message may quote a value, and the
    /// file holds credentials.
    #[error("the attempt file {path} is not valid JSON of an attempt (line {line}, column {column})")]
    Parse {
        path: String,
        line: usize,
        column: usize,
    },
}

impl AttemptFile {
    pub fn read(path: &std::path::Path) -> Result<Self, AttemptFileError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| AttemptFileError::Read {
            path: shown.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| AttemptFileError::Parse {
            path: shown,
            line: e.line(),
            column: e.column(),
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_file_is_reported_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attempt.json");
        std::fs::write(
            &path,
            r#"{"worker_id": "w", "work": {"credentials": {"k": 1}, "x": "sk-live-secret-value"}}"#,
        )
        .unwrap();
        let err = AttemptFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("sk-live") && !err.contains("\"k\""), "{err}");
        let err = AttemptFile::read(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the attempt file"), "{err}");
    }
}
