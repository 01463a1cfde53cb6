//! Builders for the normalized agent events (the variants of `agentpool_core::EventPayload`)
//! so every adapter emits the same shapes, with long strings cut so one event stays small.

use agentpool_core::{EventPayload, NewEvent, Usage};
use serde_json::Value;

/// Longest text kept in an event field (tool output, raw lines, messages).
pub const MAX_FIELD_CHARS: usize = 16 * 1024;
/// Tool results are cut harder: they are for reading along, the workspace has the real thing.
pub const MAX_TOOL_OUTPUT_CHARS: usize = 4 * 1024;

/// Cut `s` to at most `max` bytes on a char boundary, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes cut]", &s[..end], s.len() - end)
}

pub fn raw(line: &str) -> NewEvent {
    NewEvent::new(EventPayload::Raw {
        line: truncate(line, MAX_FIELD_CHARS),
        hint: None,
    })
}

/// A raw event for a line the parser understood as JSON but does not map; the line is kept
/// (cut) with its `type` so nothing is lost.
pub fn raw_json(line: &str, kind_hint: Option<&str>) -> NewEvent {
    NewEvent::new(EventPayload::Raw {
        line: truncate(line, MAX_FIELD_CHARS),
        hint: kind_hint.map(str::to_string),
    })
}

/// `line` without its colour and style escapes (SGR: `ESC [`, digits and `;`, `m`). A CLI that
/// colours its stderr even when it is no terminal (OpenCode does) would otherwise fill the log
/// with them, shown as `^[[91m` where the log is read. Any other escape stays, to be shown
/// there, not obeyed.
pub fn without_colour(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains('\x1b') {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find('\x1b') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let params = after.strip_prefix("\x1b[").map(|p| {
            p.len()
                - p.trim_start_matches(|c: char| c.is_ascii_digit() || c == ';')
                    .len()
        });
        match params {
            Some(n) if after.as_bytes().get(2 + n) == Some(&b'm') => rest = &after[3 + n..],
            _ => {
                out.push('\x1b');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

pub fn log(stream: &str, line: &str) -> NewEvent {
    NewEvent::log(stream, truncate(line, MAX_FIELD_CHARS))
}

pub fn session_started(session_id: &str, model: Option<&str>) -> NewEvent {
    NewEvent::new(EventPayload::SessionStarted {
        session_id: session_id.to_string(),
        model: model.map(str::to_string),
    })
}

pub fn assistant_message(text: &str) -> NewEvent {
    NewEvent::new(EventPayload::AssistantMessage {
        text: truncate(text, MAX_FIELD_CHARS),
    })
}

pub fn tool_call(id: Option<&str>, name: &str, input: &Value) -> NewEvent {
    let input = match serde_json::to_string(input) {
        Ok(s) if s.len() > MAX_FIELD_CHARS => Value::String(truncate(&s, MAX_FIELD_CHARS)),
        _ => input.clone(),
    };
    NewEvent::new(EventPayload::ToolCall {
        id: id.map(str::to_string),
        name: name.to_string(),
        input,
    })
}

pub fn tool_result(id: Option<&str>, ok: bool, output: &str) -> NewEvent {
    NewEvent::new(EventPayload::ToolResult {
        id: id.map(str::to_string),
        ok,
        output: truncate(output, MAX_TOOL_OUTPUT_CHARS),
    })
}

pub fn usage(u: &Usage, cost_usd: Option<f64>) -> NewEvent {
    NewEvent::new(EventPayload::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_tokens,
        cache_write_tokens: u.cache_write_tokens,
        cost_usd,
    })
}

pub struct Retry<'a> {
    pub attempt: Option<u64>,
    pub max_retries: Option<u64>,
    pub delay_ms: Option<u64>,
    pub status: Option<u64>,
    pub error: Option<&'a str>,
}

pub fn api_retry(r: Retry<'_>) -> NewEvent {
    NewEvent::new(EventPayload::ApiRetry {
        attempt: r.attempt,
        max_retries: r.max_retries,
        delay_ms: r.delay_ms,
        status: r.status,
        error: r.error.map(|e| truncate(e, MAX_FIELD_CHARS)),
    })
}

pub fn result(text: Option<&str>, is_error: bool, subtype: Option<&str>) -> NewEvent {
    NewEvent::new(EventPayload::Result {
        text: text.map(|t| truncate(t, MAX_FIELD_CHARS)),
        is_error,
        subtype: subtype.map(str::to_string),
    })
}

/// Text of a JSON value that may be a string, or an array of `{type:"text", text}` blocks (tool
/// results come in both shapes), or anything else (serialized).
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i.get("text").and_then(Value::as_str) {
                Some(t) => t.to_string(),
                None => text_of(i),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

pub fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_escapes_are_taken_out_and_others_kept() {
        use super::without_colour;
        assert_eq!(
            without_colour("\x1b[91m\x1b[1mError: \x1b[0mSession not found"),
            "Error: Session not found"
        );
        assert_eq!(without_colour("\x1b[38;5;196mred\x1b[m."), "red.");
        assert_eq!(without_colour("plain"), "plain");
        // Not colours: kept, to be shown where the log is read.
        assert_eq!(without_colour("a\x1b[2Jb"), "a\x1b[2Jb");
        assert_eq!(without_colour("\x1b]52;c;eA==\x07"), "\x1b]52;c;eA==\x07");
        assert_eq!(without_colour("end\x1b[31"), "end\x1b[31");
        assert_eq!(without_colour("\x1b"), "\x1b");
    }

    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        let s = "é".repeat(10);
        let t = truncate(&s, 5);
        assert!(t.starts_with("éé"));
        assert!(t.contains("bytes cut"));
        assert_eq!(truncate("short", 10), "short");
    }
}
