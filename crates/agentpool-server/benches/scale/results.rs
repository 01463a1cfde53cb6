//! The results file: one JSON object per mode under `target/bench-scale/results.json`, so
//! `plot` can draw what earlier runs measured.

use std::path::PathBuf;

use serde_json::{Map, Value};

/// `target/bench-scale` of the workspace (benches run with the package as working directory).
pub fn dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let d = target.join("bench-scale");
    std::fs::create_dir_all(&d).expect("create target/bench-scale");
    d
}

pub fn load() -> Map<String, Value> {
    std::fs::read_to_string(dir().join("results.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// Replace `mode`'s entry with `v` and write the file.
pub fn save(mode: &str, v: Value) {
    let mut all = load();
    all.insert(mode.to_string(), v);
    let path = dir().join("results.json");
    let text = serde_json::to_string_pretty(&Value::Object(all)).expect("json");
    std::fs::write(&path, text).expect("write results");
    eprintln!("[scale] results saved in {}", path.display());
}
