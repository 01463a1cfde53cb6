//! What a request to the endpoint carries that the script needs: the tools the agent offers
//! (per API shape) and the working directory it announces.

use std::path::PathBuf;

use serde_json::Value;

use crate::Api;

/// Tool names offered in a request body, per API.
pub fn tools_offered(api: Api, body: &Value) -> Vec<String> {
    let tools = body.get("tools").and_then(Value::as_array);
    let mut names = Vec::new();
    for t in tools.into_iter().flatten() {
        match api {
            Api::ChatCompletions => {
                if let Some(n) = t.pointer("/function/name").and_then(Value::as_str) {
                    names.push(n.to_string());
                }
            }
            Api::Gemini => {
                for d in t
                    .get("functionDeclarations")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(n) = d.get("name").and_then(Value::as_str) {
                        names.push(n.to_string());
                    }
                }
            }
            _ => {
                if let Some(n) = t.get("name").and_then(Value::as_str) {
                    if t.get("type").and_then(Value::as_str) == Some("namespace") {
                        // Codex offers an MCP server's tools as one namespace; they are named
                        // `<namespace>__<tool>` here, as Claude Code names MCP tools.
                        for inner in t.get("tools").and_then(Value::as_array).into_iter().flatten() {
                            if let Some(i) = inner.get("name").and_then(Value::as_str) {
                                names.push(format!("{n}__{i}"));
                            }
                        }
                    } else {
                        names.push(n.to_string());
                    }
                }
            }
        }
    }
    names
}

/// A Responses API tool name from [`tools_offered`] split back into the namespace it was
/// offered in and its own name, when it came from a namespace.
pub fn responses_namespace(body: &Value, offered: &str) -> Option<(String, String)> {
    body.get("tools")
        .and_then(Value::as_array)?
        .iter()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("namespace"))
        .find_map(|t| {
            let ns = t.get("name").and_then(Value::as_str)?;
            let inner = offered.strip_prefix(ns)?.strip_prefix("__")?;
            Some((ns.to_string(), inner.to_string()))
        })
}

/// The working directory an agent announces in its prompt: Claude Code's "Primary working
/// directory: /p", OpenCode's "Working directory: /p", Gemini's "Workspace Directories:\n  - /p",
/// Codex's `<cwd>/p</cwd>`.
pub fn workdir_in(body: &Value) -> Option<PathBuf> {
    const MARKERS: [&str; 4] = [
        "Primary working directory:",
        "Working directory:",
        "Workspace Directories:",
        "<cwd>",
    ];
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(body, &mut all);
    for marker in MARKERS {
        for s in &all {
            if let Some(i) = s.find(marker) {
                let rest = s[i + marker.len()..].trim_start_matches([' ', '\n', '\t', '-', '*']);
                let path: String = rest
                    .chars()
                    .take_while(|c| !matches!(c, '\n' | '<' | '"'))
                    .collect();
                let path = path.trim();
                if path.starts_with('/') {
                    return Some(PathBuf::from(path));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_working_directory_each_agent_announces() {
        let claude = json!({"system": [{"type": "text", "text": "x\nPrimary working directory: /tmp/ws1\nIs a git repo"}]});
        assert_eq!(workdir_in(&claude), Some(PathBuf::from("/tmp/ws1")));
        let gemini =
            json!({"contents": [{"parts": [{"text": "Workspace Directories:\n  - /tmp/ws2\nmore"}]}]});
        assert_eq!(workdir_in(&gemini), Some(PathBuf::from("/tmp/ws2")));
        let codex = json!({"input": [{"content": [{"text": "<cwd>/tmp/ws3</cwd>"}]}]});
        assert_eq!(workdir_in(&codex), Some(PathBuf::from("/tmp/ws3")));
        assert_eq!(workdir_in(&json!({"messages": []})), None);
    }

    #[test]
    fn reads_tool_names_in_each_api_shape() {
        let chat = json!({"tools": [{"type": "function", "function": {"name": "write"}}]});
        assert_eq!(tools_offered(Api::ChatCompletions, &chat), vec!["write"]);
        let gemini = json!({"tools": [{"functionDeclarations": [{"name": "write_file"}, {"name": "run_shell_command"}]}]});
        assert_eq!(
            tools_offered(Api::Gemini, &gemini),
            vec!["write_file", "run_shell_command"]
        );
        let responses = json!({"tools": [{"type": "custom", "name": "apply_patch"}]});
        assert_eq!(tools_offered(Api::Responses, &responses), vec!["apply_patch"]);
    }
}
