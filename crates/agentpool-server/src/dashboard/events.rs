//! Task events as readable HTML list items, chosen by the event's JSON `kind`: assistant text,
//! tool calls with their key argument, collapsible tool results, usage, retries, logs, results
//! and lifecycle steps. A kind this code does not know (new lifecycle kinds, say) still renders:
//! its name, its short scalar fields, and the whole data behind a disclosure.

use std::fmt::Write;

pub use agentpool_core::render::tool_key_argument;
use agentpool_core::render::{str_field, usage_cost, usage_tokens};
use agentpool_core::{Event, EventKind, EventPayload, Timestamp};
use serde_json::Value;

use super::html::{attr, cut, esc, first_line};

/// An event as one `<li>`. Works from the JSON form so that it never depends on which kinds
/// the core crate defines today.
pub fn render(ev: &Event) -> String {
    render_parts(&kind_of(ev), ev.seq, ev.at, &ev.data())
}

/// The event's kind as its JSON name.
#[allow(
    clippy::needless_borrows_for_generic_args,
    reason = "the borrow keeps this compiling if the kind stops being Copy (a string, say)"
)]
pub fn kind_of(ev: &Event) -> String {
    match serde_json::to_value(ev.kind()) {
        Ok(Value::String(s)) => s,
        _ => "event".to_string(),
    }
}

fn is_error(d: &Value) -> bool {
    d.get("is_error").and_then(Value::as_bool) == Some(true)
        || d.get("ok").and_then(Value::as_bool) == Some(false)
        || d.get("status").and_then(Value::as_str) == Some("error")
}

pub fn render_parts(kind: &str, seq: i64, at: Timestamp, d: &Value) -> String {
    let class: &str;
    let mut body = String::new();
    match kind {
        "assistant_message" => {
            let text = str_field(d, &["text", "content", "message"]).unwrap_or("").trim();
            let _ = write!(
                body,
                r#"<span class="tag">assistant</span><div class="msg">{}</div>"#,
                esc(text)
            );
            class = "assistant";
        }
        "tool_call" => {
            let name = str_field(d, &["name", "tool"]).unwrap_or("tool");
            let input = d.get("input").or_else(|| d.get("arguments"));
            let arg = input
                .and_then(tool_key_argument)
                .map(|a| cut(&a, 160))
                .unwrap_or_default();
            let _ = write!(
                body,
                r#"<span class="tag">tool call</span> <strong class="tool">{}</strong> <code class="arg">{}</code>"#,
                esc(name),
                esc(&arg)
            );
            if let Some(i) = input {
                let pretty = serde_json::to_string_pretty(i).unwrap_or_default();
                let _ = write!(
                    body,
                    r#"<details><summary>input</summary><pre>{}</pre></details>"#,
                    esc(&pretty)
                );
            }
            class = "tool";
        }
        "tool_result" => {
            let err = is_error(d);
            let output = str_field(d, &["output", "content", "text", "error"]).unwrap_or("");
            let lines = output.lines().count();
            let summary = if lines > 1 {
                format!("{} · {lines} lines", first_line(output, 80))
            } else {
                cut(output.trim(), 120)
            };
            let tag = if err {
                r#"<span class="tag bad">✗ tool error</span>"#
            } else {
                r#"<span class="tag good">✓ tool result</span>"#
            };
            let _ = write!(
                body,
                r#"<details><summary>{tag} {}</summary><pre>{}</pre></details>"#,
                esc(&summary),
                esc(output)
            );
            class = if err { "result err" } else { "result" };
        }
        "usage" => {
            let n = |k: &str| usage_tokens(d, k);
            let cost = usage_cost(d);
            let _ = write!(
                body,
                r#"<span class="tag">usage</span> {} in, {} out, {} cache read, {} cache write tokens{}"#,
                n("input_tokens"),
                n("output_tokens"),
                n("cache_read_tokens"),
                n("cache_write_tokens"),
                esc(&cost)
            );
            class = "usage";
        }
        "api_retry" => {
            let n = |k: &str| d.get(k).and_then(Value::as_u64).map(|v| v.to_string());
            let _ = write!(
                body,
                r#"<span class="tag warn">↻ API retry</span> attempt {} of {}{}{} {}"#,
                n("attempt").unwrap_or_else(|| "?".into()),
                n("max_retries").unwrap_or_else(|| "?".into()),
                n("status").map(|s| format!(", HTTP {s}")).unwrap_or_default(),
                n("delay_ms")
                    .map(|s| format!(", waiting {s} ms"))
                    .unwrap_or_default(),
                esc(str_field(d, &["error", "message"]).unwrap_or(""))
            );
            class = "warn";
        }
        "log" => {
            let line = str_field(d, &["line", "text", "message"]).unwrap_or("");
            let stream = str_field(d, &["stream"]).unwrap_or("out");
            let _ = write!(
                body,
                r#"<span class="tag">{}</span> <code class="line">{}</code>"#,
                esc(stream),
                esc(line)
            );
            class = "log";
        }
        "result" => {
            let text = str_field(d, &["text", "result", "final_text"]).unwrap_or("");
            if is_error(d) {
                let _ = write!(
                    body,
                    r#"<span class="tag bad">✗ error result</span><div class="msg">{}</div>"#,
                    esc(text)
                );
                class = "final err";
            } else {
                let _ = write!(
                    body,
                    r#"<span class="tag good">✓ result</span><div class="msg">{}</div>"#,
                    esc(text)
                );
                class = "final";
            }
        }
        "session_started" => {
            let id = str_field(d, &["session_id", "id"]).unwrap_or("");
            let model = str_field(d, &["model"])
                .map(|m| format!(" · model {m}"))
                .unwrap_or_default();
            let _ = write!(
                body,
                r#"<span class="tag">session</span> <code>{}</code>{}"#,
                esc(id),
                esc(&model)
            );
            class = "session";
        }
        "raw" => {
            let line = str_field(d, &["line"])
                .map(str::to_string)
                .unwrap_or_else(|| d.to_string());
            let _ = write!(
                body,
                r#"<span class="tag">raw</span> <code class="line">{}</code>"#,
                esc(&cut(&line, 2000))
            );
            class = "log";
        }
        _ => {
            // Lifecycle and any kind added later: name, message, scalar fields, whole data.
            let state = str_field(d, &["state"]);
            let label = match (kind, state) {
                ("lifecycle", Some(s)) => s.replace('_', " "),
                (k, _) => k.replace('_', " "),
            };
            let mut message = str_field(d, &["message", "text", "line", "error"])
                .unwrap_or("")
                .to_string();
            // Check rounds say what ran and how it ended in core's words; the rest of the data
            // stays generic.
            let check_step = matches!(
                state,
                Some("checks_started" | "check_finished" | "checks_changed_files" | "feedback_round")
            );
            if check_step
                && message.is_empty()
                && let EventPayload::Lifecycle(l) = EventPayload::from_parts(EventKind::Lifecycle, d.clone())
            {
                message = l.message();
            }
            let failed = is_error(d)
                || d.get("passed").and_then(Value::as_bool) == Some(false)
                || ["fail", "error", "lost", "expired"]
                    .iter()
                    .any(|w| label.contains(w) || kind.contains(w));
            let _ = write!(
                body,
                r#"<span class="tag{}">{}▸ {}</span> {}"#,
                if failed { " bad" } else { "" },
                if failed { "✗ " } else { "" },
                esc(&label),
                esc(&message)
            );
            let extras = if check_step {
                String::new()
            } else {
                scalar_fields(d, &["state", "message", "text", "line", "error"])
            };
            if !extras.is_empty() {
                let _ = write!(body, r#" <span class="kv">{}</span>"#, esc(&extras));
            }
            if let Some(tail) = str_field(d, &["output_tail"]).filter(|t| !t.is_empty()) {
                let tests = d
                    .get("failed_tests")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                let _ = write!(
                    body,
                    r#"<details><summary>output{}</summary><pre>{}</pre></details>"#,
                    if tests.is_empty() {
                        String::new()
                    } else {
                        format!(" — failing: {}", esc(&tests))
                    },
                    esc(tail)
                );
            }
            if kind != "lifecycle" && d.as_object().is_some_and(|o| !o.is_empty()) {
                let pretty = serde_json::to_string_pretty(d).unwrap_or_default();
                let _ = write!(
                    body,
                    r#"<details><summary>data</summary><pre>{}</pre></details>"#,
                    esc(&pretty)
                );
            }
            class = if failed { "life err" } else { "life" };
        }
    }
    format!(
        r#"<li class="ev {class}" id="ev-{seq}" data-kind="{}"><time datetime="{}">{}</time> {body}</li>"#,
        attr(kind),
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        at.format("%H:%M:%S UTC"),
    )
}

/// `k=v` for up to four short scalar fields not in `skip`.
fn scalar_fields(d: &Value, skip: &[&str]) -> String {
    let Some(o) = d.as_object() else {
        return String::new();
    };
    o.iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .filter_map(|(k, v)| match v {
            Value::String(s) if s.len() <= 80 => Some(format!("{k}={s}")),
            Value::Number(n) => Some(format!("{k}={n}")),
            Value::Bool(b) => Some(format!("{k}={b}")),
            _ => None,
        })
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Token and cost totals summed over `usage` events (adapters report per turn or step).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UsageSum {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub cost_usd: Option<f64>,
    pub seen: bool,
}

impl UsageSum {
    pub fn add(&mut self, ev: &Event) {
        if kind_of(ev) != "usage" {
            return;
        }
        let d = &ev.data();
        let n = |k: &str| d.get(k).and_then(Value::as_u64).unwrap_or(0);
        self.input += n("input_tokens");
        self.output += n("output_tokens");
        self.cache_read += n("cache_read_tokens");
        self.cache_write += n("cache_write_tokens");
        if let Some(c) = d.get("cost_usd").and_then(Value::as_f64) {
            self.cost_usd = Some(self.cost_usd.unwrap_or(0.0) + c);
        }
        self.seen = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at() -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn tool_calls_show_their_key_argument_escaped() {
        let h = render_parts(
            "tool_call",
            3,
            at(),
            &json!({"name": "Bash", "input": {"command": "echo '<b>hi</b>'"}}),
        );
        assert!(h.contains("<strong class=\"tool\">Bash</strong>"), "{h}");
        assert!(h.contains("echo &#39;&lt;b&gt;hi&lt;/b&gt;&#39;"), "{h}");
        assert!(!h.contains("<b>hi"), "{h}");
    }

    #[test]
    fn a_failed_check_shows_its_verdict_and_output_tail() {
        let d = json!({"state": "check_finished", "round": 1, "name": "unit", "passed": false,
            "exit_code": 101, "duration_ms": 2500, "output_tail": "left: <1>", "failed_tests": ["a::b"]});
        let h = render_parts("lifecycle", 4, at(), &d);
        assert!(h.contains("round 1: unit failed (exit 101, 2.5s)"), "{h}");
        assert!(h.contains("life err"), "{h}");
        assert!(
            h.contains("failing: a::b") && h.contains("left: &lt;1&gt;"),
            "{h}"
        );
    }

    #[test]
    fn tool_errors_are_marked_in_words() {
        let h = render_parts("tool_result", 1, at(), &json!({"ok": false, "output": "boom"}));
        assert!(h.contains("tool error") && h.contains("result err"), "{h}");
    }

    #[test]
    fn unknown_kinds_fall_back_to_name_fields_and_data() {
        let h = render_parts(
            "claimed",
            9,
            at(),
            &json!({"worker_id": "w-1", "attempt": 2, "nested": {"x": "<i>"}}),
        );
        assert!(h.contains("▸ claimed"), "{h}");
        assert!(h.contains("worker_id=w-1") && h.contains("attempt=2"), "{h}");
        assert!(h.contains("&lt;i&gt;") && !h.contains("<i>"), "{h}");
        let f = render_parts("failed", 10, at(), &json!({"message": "no"}));
        assert!(f.contains("life err") && f.contains("✗"), "{f}");
    }
}
