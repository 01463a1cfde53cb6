//! Masking secrets in a process's output before it is cut. A line longer than the spec's
//! `max_line_bytes` is delivered in pieces; masked piece by piece, a secret that a cut falls
//! inside would escape (its start at the end of one piece, the rest at the start of the next).
//! With a [`LineMask`] the pieces of a line are masked as one text: each delivery holds back
//! the end of what it has (a secret may begin there and end in the next piece) and is cut
//! only where no secret runs across the cut.

use std::sync::Arc;

use agentpool_core::Redactor;

use super::{Line, OutputStream};

/// What masks a process's lines before they are delivered, cut or not.
#[derive(Clone)]
pub struct LineMask {
    redactor: Arc<Redactor>,
    /// Bytes at the end of a cut line held back for the next delivery: at least the longest
    /// masked text less one, so that a secret that starts before them lies wholly in what is
    /// delivered.
    overlap: usize,
}

impl std::fmt::Debug for LineMask {
    // The redactor's own `Debug` would print the secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineMask")
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

impl LineMask {
    /// Masks with `redactor`.
    pub fn new(redactor: Arc<Redactor>) -> Self {
        let overlap = redactor.longest().saturating_sub(1);
        Self { redactor, overlap }
    }

    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// What of `text` (the undelivered part of a line that goes on) can be delivered now,
    /// masked; it is removed from `text`, which keeps the rest for the next piece. `None`
    /// while `text` is no longer than what is held back.
    fn cut(&self, text: &mut String) -> Option<String> {
        if text.len() <= self.overlap {
            return None;
        }
        let mut at = text.len() - self.overlap;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        if at == 0 {
            return None;
        }
        let whole = self.redact(text);
        let head = self.redact(&text[..at]);
        // The cut is clean when masking either side on its own gives what masking the whole
        // does: then no secret runs across it.
        let clean = whole.strip_prefix(head.as_str()) == Some(self.redact(&text[at..]).as_str());
        let (delivered, keep_from) = if clean {
            (head, at)
        } else {
            // A secret runs across the cut. It starts less than `overlap` bytes from the end, so
            // it lies wholly in `text` and `whole` masks it: cut after the last mask instead,
            // where the text that follows is as it was.
            match whole.rfind(Redactor::MASK) {
                Some(i) if text.ends_with(&whole[i + Redactor::MASK.len()..]) => {
                    let raw = whole.len() - i - Redactor::MASK.len();
                    (whole[..whole.len() - raw].to_string(), text.len() - raw)
                }
                _ => (whole, text.len()),
            }
        };
        text.drain(..keep_from);
        Some(delivered)
    }
}

/// Delivers a process's lines, joining the pieces of a cut line first when they are masked.
pub(super) struct Delivery {
    mask: Option<LineMask>,
    /// Per stream (stdout, stderr): the undelivered text of a cut line, and the bytes of a
    /// character the last cut split.
    pending: [(String, Vec<u8>); 2],
}

impl Delivery {
    pub(super) fn new(mask: Option<LineMask>) -> Self {
        Self {
            mask,
            pending: Default::default(),
        }
    }

    pub(super) fn line(&mut self, on_line: &mut (dyn FnMut(OutputStream, &str) + Send), line: &Line) {
        let Some(mask) = &self.mask else {
            on_line(line.stream, &String::from_utf8_lossy(&line.bytes));
            return;
        };
        let (text, split) = &mut self.pending[line.stream as usize];
        split.extend_from_slice(&line.bytes);
        let complete = if line.cut {
            complete_len(split)
        } else {
            split.len()
        };
        let rest = split.split_off(complete);
        text.push_str(&String::from_utf8_lossy(split));
        *split = rest;
        if !line.cut {
            on_line(line.stream, &mask.redact(&std::mem::take(text)));
        } else if let Some(piece) = mask.cut(text) {
            on_line(line.stream, &piece);
        }
    }

    /// Deliver what is held back of a line the process never ended.
    pub(super) fn finish(&mut self, on_line: &mut (dyn FnMut(OutputStream, &str) + Send)) {
        let Some(mask) = &self.mask else { return };
        for (stream, (text, split)) in [OutputStream::Stdout, OutputStream::Stderr]
            .into_iter()
            .zip(&mut self.pending)
        {
            text.push_str(&String::from_utf8_lossy(&std::mem::take(split)));
            if !text.is_empty() {
                on_line(stream, &mask.redact(&std::mem::take(text)));
            }
        }
    }
}

/// The length of `bytes` without a UTF-8 character cut short at its end.
fn complete_len(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let i = bytes.len() - back;
        let b = bytes[i];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let width = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if width > back { i } else { bytes.len() };
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-value-0123";

    fn mask() -> LineMask {
        LineMask::new(Arc::new(Redactor::new([SECRET])))
    }

    /// What `Delivery` delivers for a line cut into `pieces`.
    fn deliver(pieces: &[&[u8]]) -> Vec<String> {
        let mut d = Delivery::new(Some(mask()));
        let mut out = Vec::new();
        let mut on_line = |_: OutputStream, l: &str| out.push(l.to_string());
        for (i, p) in pieces.iter().enumerate() {
            let line = Line {
                stream: OutputStream::Stdout,
                bytes: p.to_vec(),
                consumed: p.len() as u64,
                cut: i + 1 < pieces.len(),
            };
            d.line(&mut on_line, &line);
        }
        d.finish(&mut on_line);
        out
    }

    #[test]
    fn a_secret_cut_in_two_is_masked_whole_and_nothing_is_lost() {
        let text = format!("{}{SECRET}{}", "a".repeat(300), "b".repeat(300));
        // Cuts before, inside and after the secret; at 410 and 417 the held-back end starts inside
        // it.
        for at in [290, 300, 305, 316, 317, 400, 410, 417] {
            let (x, y) = text.as_bytes().split_at(at);
            let out = deliver(&[x, y]);
            let joined = out.concat();
            assert_eq!(
                joined,
                format!("{}{}{}", "a".repeat(300), Redactor::MASK, "b".repeat(300)),
                "cut at {at}: {out:?}"
            );
            assert!(out.iter().all(|l| !l.contains("s3cr3t") && !l.contains("0123")));
        }
    }

    #[test]
    fn a_character_split_by_a_cut_survives() {
        let text = format!("{}é{}", "a".repeat(200), "b".repeat(200));
        let (x, y) = text.as_bytes().split_at(201);
        assert_eq!(deliver(&[x, y]).concat(), text);
        assert_eq!(complete_len("aé".as_bytes()), 3);
        assert_eq!(complete_len(&"aé".as_bytes()[..2]), 1);
    }
}
