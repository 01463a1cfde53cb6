//! What reaches a terminal from the server's data made harmless: control characters and
//! invisible (bidirectional, zero-width) characters are written as visible escapes.
//!
//! A task's output, an agent's words, a file name or an error message can hold escape
//! sequences. Written raw, they move the cursor, clear the screen, retitle the window, write
//! the clipboard (OSC 52) or make a command read differently from what runs (U+202E). An agent
//! working on an untrusted repository can be led to print any of them, and an operator reads
//! its log in a terminal, so the CLI's human output shows them instead.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use agentpool_core::spec::is_invisible;

/// Whether stdout carries JSON: written as it is, since serde escapes every control character
/// and a program reading it wants the text as it was (direction controls included).
static JSON: AtomicBool = AtomicBool::new(false);

/// Set once, when the output format is known.
pub fn set_json_output(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// Text for stdout: as it is for JSON output, else made [`terminal_safe`] (keeping the CLI's
/// own colours only where it writes colours at all).
pub fn for_stdout(s: &str) -> Cow<'_, str> {
    if JSON.load(Ordering::Relaxed) {
        Cow::Borrowed(s)
    } else {
        // Asked once: whether stdout is a terminal does not change while the CLI runs, and a
        // log of many lines would ask (an environment lookup and a system call) at each.
        static COLOUR: OnceLock<bool> = OnceLock::new();
        terminal_safe(s, *COLOUR.get_or_init(|| super::Style::stdout().color))
    }
}

/// The colour codes the CLI's own `Style` writes, kept as they are; every other escape
/// sequence is shown, not obeyed.
const OWN_SGR: [&str; 9] = [
    "\x1b[0m", "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[34m", "\x1b[35m", "\x1b[36m",
];

/// `s` with line feeds, tabs and (with `colour`) the CLI's own colour codes kept, and every
/// other control character written in caret notation (`^[` for ESC, `^M` for a carriage
/// return, `^?` for DEL) or, for C1 controls and invisible characters, as `<U+202E>`. Without
/// `colour` (not a terminal, or `NO_COLOR`) the CLI writes no colour codes, so any that `s`
/// holds came from a task and are shown too.
pub fn terminal_safe(s: &str, colour: bool) -> Cow<'_, str> {
    let harmful = |c: char| (c.is_control() && c != '\n' && c != '\t') || is_invisible(c);
    if !s.chars().any(harmful) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c == '\x1b'
            && colour
            && let Some(code) = OWN_SGR.iter().find(|code| rest.starts_with(**code))
        {
            out.push_str(code);
            rest = &rest[code.len()..];
            continue;
        }
        match c {
            '\n' | '\t' => out.push(c),
            '\x7f' => out.push_str("^?"),
            c if u32::from(c) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c if harmful(c) => out.push_str(&format!("<U+{:04X}>", u32::from(c))),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        // Clear the screen, write the clipboard, retitle the window, return to the line start.
        let s = "a\x1b[2Jb\x1b]52;c;ZWNobyBoaQ==\x07c\x1b]0;title\x1b\\d\re";
        assert_eq!(
            terminal_safe(s, true),
            "a^[[2Jb^[]52;c;ZWNobyBoaQ==^Gc^[]0;title^[\\d^Me"
        );
        assert_eq!(terminal_safe("\x00\x08\x7f\u{9b}31m", true), "^@^H^?<U+009B>31m");
    }

    #[test]
    fn direction_controls_and_invisible_characters_are_named() {
        assert_eq!(
            terminal_safe("rm -rf /\u{202E}txt.exe\u{200B}", true),
            "rm -rf /<U+202E>txt.exe<U+200B>"
        );
    }

    #[test]
    fn ordinary_text_and_the_cli_s_own_colours_pass_unchanged() {
        let s = "\x1b[32m✓\x1b[0m done\n\tnext: naïve café 日本\n";
        assert_eq!(terminal_safe(s, true), s);
        assert!(matches!(terminal_safe("plain", true), Cow::Borrowed("plain")));
        // A colour code of the CLI's own that an agent printed is only a colour.
        assert_eq!(terminal_safe("\x1b[31mred\x1b[0m", true), "\x1b[31mred\x1b[0m");
        // Without colours the CLI writes none: a colour code is a task's, and shown.
        assert_eq!(terminal_safe("\x1b[31mred\x1b[0m", false), "^[[31mred^[[0m");
    }
}
