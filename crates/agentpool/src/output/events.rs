//! Agent and lifecycle events as readable terminal lines, and the live status line shown while
//! a task runs.

use std::io::{IsTerminal, Write};

use agentpool_core::render::{str_field, usage_cost, usage_tokens};
use agentpool_core::{Event, EventKind, TaskState};
use serde_json::Value;

use super::{Style, tool_key_argument, truncate};

/// One event as a readable line (or a few), or nothing for events not worth showing.
pub fn render_event(style: &Style, ev: &Event) -> Option<String> {
    let d = &ev.data();
    let time = style.dim(&ev.at.with_timezone(&chrono::Local).format("%H:%M:%S").to_string());
    let body = match ev.kind() {
        EventKind::Lifecycle => {
            let l = ev.payload.lifecycle()?;
            let state = l.name();
            let msg = l.message();
            let label = state.replace('_', " ");
            let state_s = match state.parse::<TaskState>() {
                Ok(s) => style.state(s),
                Err(_) => style.cyan(&label),
            };
            // Messages often begin with their state ("preparing workspace…"): say it once.
            match msg.as_str().strip_prefix(label.as_str()) {
                Some(rest) if !label.is_empty() => {
                    format!("{} {state_s}{rest}", style.cyan("▸"))
                }
                _ if msg.is_empty() => format!("{} {state_s}", style.cyan("▸")),
                _ => format!("{} {state_s}: {msg}", style.cyan("▸")),
            }
        }
        EventKind::SessionStarted => {
            let id = str_field(d, &["session_id", "id"]).unwrap_or("");
            let model = str_field(d, &["model"])
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            format!("{} session {id}{model}", style.cyan("●"))
        }
        EventKind::AssistantMessage => {
            let text = str_field(d, &["text", "content", "message"]).unwrap_or("").trim();
            if text.is_empty() {
                return None;
            }
            let mut lines = text.lines();
            let first = lines.next().unwrap_or("");
            let mut s = format!("{} {}", style.bold("│"), first);
            for l in lines {
                s.push_str(&format!("\n         {} {}", style.bold("│"), l));
            }
            s
        }
        EventKind::ToolCall => {
            let name = str_field(d, &["name", "tool"]).unwrap_or("tool");
            let arg = d
                .get("input")
                .or_else(|| d.get("arguments"))
                .and_then(tool_key_argument)
                .map(|a| truncate(&a, 100))
                .unwrap_or_default();
            format!("{} {} {}", style.yellow("→"), style.bold(name), arg)
        }
        EventKind::ToolResult => {
            let is_error = d.get("is_error").and_then(Value::as_bool).unwrap_or(false)
                || d.get("ok").and_then(Value::as_bool) == Some(false)
                || d.get("status").and_then(Value::as_str) == Some("error");
            let output = str_field(d, &["output", "content", "text", "error"]).unwrap_or("");
            let n = output.lines().count();
            if is_error {
                format!(
                    "{} {} {}",
                    style.red("←"),
                    style.red("error"),
                    truncate(output, 120)
                )
            } else {
                let summary = if n > 1 {
                    format!("{n} lines")
                } else {
                    truncate(output, 100)
                };
                format!(
                    "{} {} {}",
                    style.green("←"),
                    style.green("ok"),
                    style.dim(&summary)
                )
            }
        }
        EventKind::Usage => {
            let n = |k: &str| usage_tokens(d, k);
            let cost = usage_cost(d);
            style.dim(&format!(
                "Σ {} in, {} out tokens{cost}",
                n("input_tokens"),
                n("output_tokens")
            ))
        }
        EventKind::ApiRetry => {
            let attempt = d.get("attempt").and_then(Value::as_u64).unwrap_or(0);
            let err = str_field(d, &["error", "message"]).unwrap_or("");
            format!("{} API retry {attempt} {}", style.yellow("↻"), truncate(err, 100))
        }
        EventKind::Log => {
            let line = str_field(d, &["line", "text", "message"]).unwrap_or("");
            let s = truncate(line, 200);
            if str_field(d, &["stream"]) == Some("stderr") {
                style.dim(&format!("! {s}"))
            } else {
                style.dim(&format!("  {s}"))
            }
        }
        EventKind::Result => {
            let is_error = d.get("is_error").and_then(Value::as_bool).unwrap_or(false);
            let text = str_field(d, &["text", "result", "final_text"]).unwrap_or("");
            if is_error {
                format!("{} {}", style.red("✗"), truncate(text, 300))
            } else {
                format!("{} {}", style.green("✓"), truncate(text, 300))
            }
        }
        EventKind::Raw => {
            let text = str_field(d, &["line"])
                .map(str::to_string)
                .unwrap_or_else(|| d.to_string());
            style.dim(&format!("  {}", truncate(&text, 160)))
        }
    };
    Some(format!("{time} {body}"))
}

/// A status line redrawn in place on a terminal (spinner + text); silent otherwise. Printing
/// through it keeps regular output and the status line from garbling each other.
pub struct StatusLine {
    enabled: bool,
    frame: usize,
    text: String,
    shown: bool,
}

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl StatusLine {
    /// Enabled only when stderr is a terminal (and the caller is not printing JSON).
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled: enabled && std::io::stderr().is_terminal(),
            frame: 0,
            text: String::new(),
            shown: false,
        }
    }

    pub fn set(&mut self, text: impl Into<String>) {
        self.text = super::terminal_safe(&text.into(), super::Style::stderr().color).into_owned();
        self.draw();
    }

    pub fn tick(&mut self) {
        self.frame = (self.frame + 1) % FRAMES.len();
        self.draw();
    }

    fn draw(&mut self) {
        if !self.enabled || self.text.is_empty() {
            return;
        }
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{} {}", FRAMES[self.frame], self.text);
        let _ = err.flush();
        self.shown = true;
    }

    pub fn clear(&mut self) {
        if self.enabled && self.shown {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }

    /// Print a line on stdout without leaving the status line in the middle of it.
    pub fn println(&mut self, line: &str) {
        self.clear();
        outln!("{line}");
        self.draw();
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.clear();
    }
}
