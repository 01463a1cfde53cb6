//! HTML building blocks: escaping (every value that is not a literal of this crate goes
//! through [`esc`], or in an attribute [`label`] or [`attr`]), the page layout with navigation,
//! and the small fragments every page uses (state badges, times, durations, labels, links).

use std::fmt::{self, Write};

use agentpool_core::{Labels, TaskId, TaskState, Timestamp, WorkerStatus};

use super::auth::Session;

/// Escapes `&`, `<`, `>`, `"` and `'`: safe in text and in quoted attribute values. A Unicode
/// direction control, which would make text display in another order than it is (a command
/// that shows one thing and runs another), is shown as `<U+202E>` in text ([`esc`], marked)
/// and in words the browser shows or reads out ([`label`]); in a form field's value ([`attr`])
/// it is kept, so that the field sends back what it holds.
pub struct Esc<'a> {
    text: &'a str,
    bidi: Bidi,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bidi {
    /// `<span class=bidi>&lt;U+202E&gt;</span>`.
    Marked,
    /// `&lt;U+202E&gt;`: for attribute values and the title, where markup would show as such.
    Named,
    Kept,
}

/// `s` for the page's text.
pub fn esc(s: &str) -> Esc<'_> {
    Esc {
        text: s,
        bidi: Bidi::Marked,
    }
}

/// `s` for an attribute the browser shows or reads out (a confirmation, a label, a tooltip)
/// and for the document's title.
pub fn label(s: &str) -> Esc<'_> {
    Esc {
        text: s,
        bidi: Bidi::Named,
    }
}

/// `s` for a form field's value, a link or an id: exactly as it is.
pub fn attr(s: &str) -> Esc<'_> {
    Esc {
        text: s,
        bidi: Bidi::Kept,
    }
}

/// The characters that change the direction text is displayed in (Unicode's Bidi_Control).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.text;
        let mut last = 0;
        for (i, c) in s.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                c if self.bidi != Bidi::Kept && is_bidi_control(c) => {
                    f.write_str(&s[last..i])?;
                    let code = u32::from(c);
                    if self.bidi == Bidi::Marked {
                        // No quotes in the marker: it stays inert even where it should not be.
                        write!(f, "<span class=bidi>&lt;U+{code:04X}&gt;</span>")?;
                    } else {
                        write!(f, "&lt;U+{code:04X}&gt;")?;
                    }
                    last = i + c.len_utf8();
                    continue;
                }
                _ => continue,
            };
            f.write_str(&s[last..i])?;
            f.write_str(rep)?;
            last = i + 1;
        }
        f.write_str(&s[last..])
    }
}

/// Percent-encodes everything but unreserved characters: for path segments and query values.
pub struct Url<'a>(pub &'a str);

impl fmt::Display for Url<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// `s` cut to at most `max` characters, with an ellipsis when cut.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// First line of `s`, cut to `max` characters.
pub fn first_line(s: &str, max: usize) -> String {
    let line = s.trim().lines().next().unwrap_or("");
    let more = s.trim().lines().nth(1).is_some();
    let c = cut(line, max);
    if more && !c.ends_with('…') {
        format!("{c} …")
    } else {
        c
    }
}

/// A state as symbol + word (readable without colour), with a class for colour.
pub fn state_badge(s: TaskState) -> String {
    let sym = match s {
        TaskState::Queued => "◷",
        TaskState::Running => "▶",
        TaskState::Succeeded => "✓",
        TaskState::Failed => "✗",
        TaskState::Canceled => "⊘",
    };
    badge("st", sym, s.as_str())
}

/// A worker status as symbol + word, like [`state_badge`].
pub fn worker_badge(s: WorkerStatus) -> String {
    let sym = match s {
        WorkerStatus::Idle => "○",
        WorkerStatus::Busy => "●",
        WorkerStatus::Draining => "◐",
        WorkerStatus::Offline => "✗",
        WorkerStatus::Unhealthy => "⚠",
    };
    badge("ws", sym, s.as_str())
}

/// The badge markup: the symbol hidden from screen readers, which read the word; the class
/// `{kind}-{word}` picks the colour.
fn badge(kind: &str, sym: &str, word: &str) -> String {
    format!(r#"<span class="badge {kind}-{word}"><span aria-hidden="true">{sym}</span> {word}</span>"#)
}

/// An absolute time in a `<time>` element, in UTC and saying so.
pub fn time(t: Timestamp) -> String {
    format!(
        r#"<time datetime="{}">{}</time>"#,
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        t.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// "12 s ago", "3 min ago", "in 5 s": to the nearest unit, so that a delay just under two
/// hours reads "in 2 h", not "in 1 h".
pub fn ago(t: Timestamp, now: Timestamp) -> String {
    let secs = (now - t).num_seconds();
    let (n, future) = if secs < 0 { (-secs, true) } else { (secs, false) };
    let nearest = |unit: i64| (n + unit / 2) / unit;
    let s = if n < 60 {
        format!("{n} s")
    } else if nearest(60) < 60 {
        format!("{} min", nearest(60))
    } else if nearest(3600) < 48 {
        format!("{} h", nearest(3600))
    } else {
        format!("{} d", nearest(86400))
    };
    if future {
        format!("in {s}")
    } else {
        format!("{s} ago")
    }
}

pub fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

pub fn short_id(id: &TaskId) -> String {
    let s = id.to_string();
    s[s.len().saturating_sub(8)..].to_string()
}

pub fn task_link(id: &TaskId) -> String {
    format!(
        r#"<a href="/tasks/{id}" class="id" title="{id}">{}</a>"#,
        short_id(id)
    )
}

pub fn labels(l: &Labels) -> String {
    let mut out = String::new();
    for (k, v) in l {
        let _ = write!(out, r#"<span class="label">{}={}</span> "#, esc(k), esc(v));
    }
    out
}

/// A URL that is safe to put in `href`: only http(s) links from data an agent or user wrote.
pub fn safe_href(url: &str) -> Option<&str> {
    let lower = url.trim_start().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then_some(url)
}

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Tasks,
    Workers,
    Projects,
    None,
}

/// The whole document around `body`. `live` is the URL of the page's live-update stream.
pub fn page(title: &str, nav: Nav, session: Option<&Session>, live: Option<&str>, body: &str) -> String {
    let mut h = String::with_capacity(body.len() + 2048);
    let _ = write!(
        h,
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · agentpool</title>
<link rel="icon" href="/assets/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/assets/app.css?v={v}">
<script src="/assets/app.js?v={v}" defer></script>
</head><body>
<a class="skip" href="#main">Skip to content</a>
<header class="top"><a class="brand" href="/">agentpool</a>"##,
        label(title),
        v = super::assets::VERSION
    );
    if let Some(s) = session {
        h.push_str(r#"<nav aria-label="Main"><ul>"#);
        for (n, href, label) in [
            (Nav::Overview, "/", "Overview"),
            (Nav::Tasks, "/tasks", "Tasks"),
            (Nav::Workers, "/workers", "Workers"),
            (Nav::Projects, "/projects", "Projects"),
        ] {
            let cur = if n == nav { r#" aria-current="page""# } else { "" };
            let _ = write!(h, r#"<li><a href="{href}"{cur}>{label}</a></li>"#);
        }
        h.push_str("</ul></nav>");
        let _ = write!(h, r#"<div class="who"><span class="role">{}</span>"#, s.role());
        if s.can_log_out() {
            let _ = write!(
                h,
                r#"<form method="post" action="/logout">{}<button type="submit" class="link">Log out</button></form>"#,
                s.csrf_field()
            );
        }
        h.push_str("</div>");
    }
    h.push_str("</header>\n");
    match live {
        Some(url) => {
            let _ = write!(h, r#"<main id="main" data-live="{}">"#, attr(url));
        }
        None => h.push_str(r#"<main id="main">"#),
    }
    h.push_str(body);
    h.push_str("</main></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#).to_string(),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("plain é").to_string(), "plain é");
    }

    #[test]
    fn direction_controls_are_shown_in_text_and_labels_and_kept_in_values() {
        let s = "ls \u{202E}txt.exe\u{2066}x\u{200F}";
        assert_eq!(
            esc(s).to_string(),
            "ls <span class=bidi>&lt;U+202E&gt;</span>txt.exe<span class=bidi>&lt;U+2066&gt;</span>x<span class=bidi>&lt;U+200F&gt;</span>"
        );
        assert_eq!(attr(s).to_string(), s);
        assert_eq!(
            label(s).to_string(),
            "ls &lt;U+202E&gt;txt.exe&lt;U+2066&gt;x&lt;U+200F&gt;"
        );
        assert_eq!(attr("<\"'&>").to_string(), "&lt;&quot;&#39;&amp;&gt;");
        assert_eq!(
            esc("é\u{202A}").to_string(),
            "é<span class=bidi>&lt;U+202A&gt;</span>"
        );
    }

    #[test]
    fn times_say_utc_and_relative_ones_round_to_the_nearest_unit() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        assert!(
            time(now).contains(">2027-01-15 08:00:00 UTC</time>"),
            "{}",
            time(now)
        );
        let later = |s: i64| ago(now + chrono::Duration::seconds(s), now);
        assert_eq!(later(7200 - 60), "in 2 h");
        assert_eq!(later(7200), "in 2 h");
        assert_eq!(later(5400 - 1), "in 1 h");
        assert_eq!(later(59 * 60 + 40), "in 1 h");
        assert_eq!(later(150), "in 3 min");
        assert_eq!(later(59), "in 59 s");
        assert_eq!(
            ago(now - chrono::Duration::seconds(47 * 3600 + 1800), now),
            "2 d ago"
        );
        assert_eq!(
            ago(
                now - chrono::Duration::days(29) - chrono::Duration::hours(13),
                now
            ),
            "30 d ago"
        );
    }

    #[test]
    fn urls_encode_everything_reserved() {
        assert_eq!(Url("a b/c?d=e&f").to_string(), "a%20b%2Fc%3Fd%3De%26f");
    }

    #[test]
    fn only_http_links_are_linked() {
        assert!(safe_href("https://github.com/o/r/pull/1").is_some());
        assert!(safe_href("javascript:alert(1)").is_none());
        assert!(safe_href(" JavaScript:alert(1)").is_none());
        assert!(safe_href("data:text/html,x").is_none());
    }

    #[test]
    fn cut_respects_characters() {
        assert_eq!(cut("ééé", 2), "éé…");
        assert_eq!(first_line("a\nb", 10), "a …");
    }
}
