//! The config file's settings as defaults of the command line. A key names a setting by its
//! environment variable without `AGENTPOOL_`, in lower case (`lease_ttl_secs` is
//! `AGENTPOOL_LEASE_TTL_SECS`, `--lease-ttl-secs`), and becomes that flag's default wherever
//! the flag appears, so the flag and the variable still win over it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Command;
use serde_json::{Map, Value};

use crate::config::{CONFIG_FILE, default_data_dir};

/// Where the file itself is found: it cannot say.
const NOT_IN_FILE: [&str; 1] = ["data_dir"];

/// The data directory the command line names (`--data-dir`, else `AGENTPOOL_DATA_DIR`, else
/// the default), read ahead of parsing because the config file lives in it.
pub fn data_dir_of(args: &[OsString]) -> PathBuf {
    let mut given = None;
    let mut words = args.iter().skip(1);
    while let Some(w) = words.next() {
        let Some(w) = w.to_str() else { continue };
        if w == "--" {
            break;
        }
        if w == "--data-dir" {
            given = words.next().map(PathBuf::from);
        } else if let Some(v) = w.strip_prefix("--data-dir=") {
            given = Some(PathBuf::from(v));
        }
    }
    given
        .or_else(|| {
            std::env::var_os("AGENTPOOL_DATA_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(default_data_dir)
}

/// `cmd` with the settings of `<data_dir>/config.json` as defaults (none when there is no
/// file), and what was read. A key that names no setting, a value that is not a string,
/// number, boolean or list of them, or one its flag's parser refuses, is an error naming the
/// file.
pub fn with_file_defaults(cmd: Command, data_dir: &Path) -> Result<(Command, Option<FileRead>), String> {
    let path = data_dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((cmd, None)),
        Err(e) => return Err(format!("cannot read the config file {}: {e}", path.display())),
    };
    let at = |m: String| format!("config file {}: {m}", path.display());
    let map: Map<String, Value> =
        serde_json::from_str(&text).map_err(|e| at(format!("not a JSON object of settings: {e}")))?;
    let mut values = BTreeMap::new();
    for (key, value) in &map {
        if NOT_IN_FILE.contains(&key.as_str()) {
            return Err(at(format!(
                "{key} cannot be set here: the file is found through it"
            )));
        }
        let text = match value {
            Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(|v| v.join(",")),
            v => scalar(v),
        }
        .ok_or_else(|| {
            at(format!(
                "{key}: expected a string, number, boolean or a list of them"
            ))
        })?;
        values.insert(
            format!("AGENTPOOL_{}", key.to_ascii_uppercase()),
            (key.as_str(), text),
        );
    }
    let mut used = BTreeMap::new();
    let mut refused = Vec::new();
    let cmd = apply(cmd, &[], &values, &mut used, &mut refused);
    if let Some((key, why)) = refused.into_iter().next() {
        return Err(at(format!("{key}: {why}")));
    }
    match values.iter().find(|(env, _)| !used.contains_key(*env)) {
        Some((_, (key, _))) => Err(at(format!(
            "unknown setting {key:?} (a key is a setting's environment variable without \
             AGENTPOOL_, in lower case, e.g. lease_ttl_secs)"
        ))),
        None => Ok((
            cmd,
            Some(FileRead {
                keys: values
                    .iter()
                    .map(|(env, (key, _))| (key.to_string(), used.remove(env).unwrap_or_default()))
                    .collect(),
                path,
            }),
        )),
    }
}

/// A config file that was read: where, and the settings it gave (their names only: a token or
/// key may be among the values), for a service's log at start.
#[derive(Debug)]
pub struct FileRead {
    pub path: PathBuf,
    /// Each setting, and the commands that have its flag (a command by its subcommand names;
    /// the root, empty, for the global flags that every command has).
    keys: BTreeMap<String, BTreeSet<Vec<String>>>,
}

impl FileRead {
    /// The settings of the file that `command` (its subcommand names, `["tasks", "list"]`)
    /// uses, and those it does not: a key is accepted when any command has its flag, so a
    /// file shared by several commands can hold settings that this one ignores, which its
    /// log must not pass off as applied.
    pub fn used_by(&self, command: &[String]) -> (Vec<String>, Vec<String>) {
        self.keys
            .iter()
            .map(|(key, by)| (key, by.iter().any(|c| command.starts_with(c))))
            .fold((Vec::new(), Vec::new()), |(mut used, mut not), (key, uses)| {
                if uses { &mut used } else { &mut not }.push(key.clone());
                (used, not)
            })
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Set the defaults on `cmd`'s arguments and its subcommands', recording which settings found
/// a flag and which values the flag's own parser refuses (so the error names the file, not a
/// flag nobody typed). The defaults are not shown in help: a token or key may be among them.
fn apply(
    mut cmd: Command,
    path: &[String],
    values: &BTreeMap<String, (&str, String)>,
    used: &mut BTreeMap<String, BTreeSet<Vec<String>>>,
    refused: &mut Vec<(String, String)>,
) -> Command {
    let mut found: Vec<(clap::Id, String)> = Vec::new();
    for a in cmd.get_arguments() {
        let Some(env) = a.get_env().and_then(|e| e.to_str()) else {
            continue;
        };
        let Some((key, text)) = values.get(env) else {
            continue;
        };
        let parts: Vec<&str> = match a.get_value_delimiter() {
            Some(d) => text.split(d).collect(),
            None => vec![text.as_str()],
        };
        // The flag's own parser, on a command of its own: the value as if typed with it
        // (`--flag=value`, so that one starting with '-' is still a value).
        let long = a.get_long().unwrap_or("value");
        let mut probe = clap::Arg::new("value")
            .long(long.to_string())
            .action(clap::ArgAction::Set)
            .value_parser(a.get_value_parser().clone());
        if let Some(name) = a.get_value_names().and_then(|n| n.first()) {
            probe = probe.value_name(name.clone());
        }
        let probe = Command::new("agentpool").no_binary_name(true).arg(probe);
        for part in parts {
            if let Err(e) = probe.clone().try_get_matches_from([format!("--{long}={part}")]) {
                let rendered = e.to_string();
                let first = rendered.lines().next().unwrap_or_default();
                let why = first.strip_prefix("error: ").unwrap_or(first);
                refused.push((key.to_string(), why.to_string()));
            }
        }
        found.push((a.get_id().clone(), env.to_string()));
    }
    for (id, env) in found {
        if let Some((_, text)) = values.get(&env) {
            let text = text.clone();
            cmd = cmd.mut_arg(id, |a| {
                // A flag that takes no value (a switch) shows no default anyway.
                let takes_value = a.get_action().takes_values();
                a.default_value(text).hide_default_value(takes_value)
            });
            used.entry(env).or_default().insert(path.to_vec());
        }
    }
    let subcommands: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    for name in subcommands {
        let mut sub_path = path.to_vec();
        sub_path.push(name.clone());
        cmd = cmd.mut_subcommand(name, |sub| apply(sub, &sub_path, values, used, refused));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::cli::{Cli, Command as Sub};

    /// `argv` parsed with `json` as the config file.
    fn parse(json: &str, argv: &[&str]) -> Result<Cli, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), json).unwrap();
        let (cmd, _) = with_file_defaults(Cli::command(), dir.path())?;
        let m = cmd
            .try_get_matches_from([&["agentpool"], argv].concat())
            .map_err(|e| e.to_string())?;
        Cli::from_arg_matches(&m).map_err(|e| e.to_string())
    }

    #[test]
    fn every_setting_of_the_file_is_its_flag_s_default_and_a_flag_wins() {
        let file = r#"{"lease_ttl_secs": 30, "allow_local_repos": true, "server": "http://file:1",
                       "agents": ["command", "codex"], "concurrency": 4, "labels": "zone=a"}"#;
        let cli = parse(file, &["serve"]).unwrap();
        assert_eq!(cli.global.server.as_deref(), Some("http://file:1"));
        let Sub::Serve(serve) = cli.command else {
            panic!("serve")
        };
        assert_eq!(serve.lease_ttl_secs, 30);
        assert!(serve.allow_local_repos);
        // One key serves every command that has the flag.
        let Sub::Worker(worker) = parse(file, &["worker"]).unwrap().command else {
            panic!("worker")
        };
        assert_eq!(worker.agents, ["command", "codex"]);
        assert_eq!(worker.concurrency, 4);
        assert_eq!(worker.labels, [("zone".to_string(), "a".to_string())]);
        assert!(worker.allow_local_repos);
        let Sub::Worker(worker) = parse(file, &["worker", "-c", "2", "--labels", "zone=b"])
            .unwrap()
            .command
        else {
            panic!("worker")
        };
        assert_eq!(worker.concurrency, 2);
        assert_eq!(worker.labels, [("zone".to_string(), "b".to_string())]);
        // A value the flag's parser refuses is refused naming the file and the key, whatever
        // the command.
        for argv in [&["serve"][..], &["tasks", "list"]] {
            let err = parse(r#"{"lease_ttl_secs": "soon"}"#, argv).unwrap_err();
            assert!(
                err.starts_with("config file ") && err.contains(": lease_ttl_secs: invalid value 'soon'"),
                "{err}"
            );
        }
        let err = parse(r#"{"labels": ["zone=a", "nope"]}"#, &["worker"]).unwrap_err();
        assert!(err.contains(": labels: ") && err.contains("nope"), "{err}");
    }

    #[test]
    fn a_key_that_names_no_setting_is_refused_with_the_file_named() {
        for (json, says) in [
            (r#"{"sever": "x"}"#, "unknown setting \"sever\""),
            (r#"{"data_dir": "/x"}"#, "data_dir cannot be set here"),
            (
                r#"{"labels": {"zone": "a"}}"#,
                "labels: expected a string, number, boolean",
            ),
            ("[1]", "not a JSON object of settings"),
        ] {
            let err = parse(json, &["serve"]).unwrap_err();
            assert!(
                err.starts_with("config file ") && err.contains(CONFIG_FILE),
                "{err}"
            );
            assert!(err.contains(says), "{json}: {err}");
        }
    }

    /// A setting some other command has is accepted, but the log of one without it says
    /// that it does not use it (`up` has no lease TTL of its own).
    #[test]
    fn what_a_command_does_not_use_of_the_file_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            r#"{"lease_ttl_secs": 5, "workers": 3, "output": "json"}"#,
        )
        .unwrap();
        let (_, read) = with_file_defaults(Cli::command(), dir.path()).unwrap();
        let read = read.expect("the file was read");
        let of = |words: &[&str]| read.used_by(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>());
        assert_eq!(
            of(&["up"]),
            (
                vec!["output".to_string(), "workers".to_string()],
                vec!["lease_ttl_secs".to_string()]
            )
        );
        assert_eq!(
            of(&["serve"]),
            (
                vec!["lease_ttl_secs".to_string(), "output".to_string()],
                vec!["workers".to_string()]
            )
        );
        // A global flag is every command's.
        assert_eq!(of(&["tasks", "list"]).0, ["output"]);
    }

    #[test]
    fn help_does_not_show_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            r#"{"token": "apt_from-the-file", "server_key": "c2VjcmV0"}"#,
        )
        .unwrap();
        let (mut cmd, read) = with_file_defaults(Cli::command(), dir.path()).unwrap();
        let read = read.expect("the file was read");
        assert_eq!(read.keys.keys().collect::<Vec<_>>(), ["server_key", "token"]);
        let root = cmd.render_long_help().to_string();
        let serve = cmd
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        for help in [root, serve] {
            assert!(
                !help.contains("apt_from-the-file") && !help.contains("c2VjcmV0"),
                "{help}"
            );
        }
    }

    #[test]
    fn the_data_dir_is_read_ahead_from_the_command_line() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            data_dir_of(&args(&["agentpool", "--data-dir", "/a", "serve"])),
            PathBuf::from("/a")
        );
        assert_eq!(
            data_dir_of(&args(&["agentpool", "tasks", "list", "--data-dir=/b"])),
            PathBuf::from("/b")
        );
        // After `--` the words are a command's, not agentpool's.
        assert_ne!(
            data_dir_of(&args(&["agentpool", "run", "--", "x", "--data-dir", "/c"])),
            PathBuf::from("/c")
        );
    }
}
