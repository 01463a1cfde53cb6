//! How much of a chatty run's output an attempt records: the stdout and stderr lines of its
//! command, agent and checks (and the raw lines of an agent) up to a budget, then only the last
//! of them, with a line saying what was left out. The pipeline's own lines always pass.
//! A command printing millions of lines would otherwise become millions of stored events (a
//! `yes | head -c 20M` made 10 million, 1.4 GB of database and minutes of streaming); the end
//! of the output, where a failure is explained, is what a reader needs most.

use std::collections::VecDeque;

use agentpool_core::{EventPayload, NewEvent};

/// What a stored event costs beyond its line (row, index entry, JSON keys), counted with each
/// line so that many short lines use the budget as well as a few long ones.
const EVENT_OVERHEAD: u64 = 64;

/// The default head, in MiB: what `--max-log-mib` defaults to.
pub const DEFAULT_HEAD_MIB: u64 = 8;

/// The budget of one attempt's output events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimit {
    /// Bytes of lines recorded from the start of the attempt, as they come.
    pub head_bytes: u64,
    /// Bytes of the last lines recorded at the end once the head is spent.
    pub tail_bytes: u64,
}

impl Default for LogLimit {
    /// 8 MiB from the start (about 120,000 short lines), then the last 256 KiB.
    fn default() -> Self {
        Self {
            head_bytes: DEFAULT_HEAD_MIB << 20,
            tail_bytes: 256 << 10,
        }
    }
}

/// The length of `event`'s line when it is a process's output (a `log` event of stdout or
/// stderr, or an agent's `raw` line).
fn line_len(event: &NewEvent) -> Option<u64> {
    match &event.payload {
        EventPayload::Log { stream, line } if stream == "stdout" || stream == "stderr" => {
            Some(line.len() as u64)
        }
        EventPayload::Raw { line, .. } => Some(line.len() as u64),
        _ => None,
    }
}

/// Whether `event` marks the end of a step's output: a lifecycle event (agent started,
/// committed, …) or one of the pipeline's own lines ("no changes to commit"). The lines held
/// back go before it, so that a step's last lines stay with that step.
fn ends_a_step(event: &NewEvent) -> bool {
    event.payload.lifecycle().is_some()
        || matches!(&event.payload, EventPayload::Log { stream, .. } if stream == "agentpool")
}

/// Applies a [`LogLimit`] to the events of one attempt, in order.
#[derive(Debug)]
pub(crate) struct LogFilter {
    limit: LogLimit,
    head_used: u64,
    /// The head is spent (and the notice said so): all further output goes to the tail.
    spent: bool,
    /// Output past the head, the oldest first, within `tail_bytes`.
    tail: VecDeque<(NewEvent, u64)>,
    tail_used: u64,
    left_out_lines: u64,
    left_out_bytes: u64,
}

impl LogFilter {
    pub(crate) fn new(limit: LogLimit) -> Self {
        Self {
            limit,
            head_used: 0,
            spent: false,
            tail: VecDeque::new(),
            tail_used: 0,
            left_out_lines: 0,
            left_out_bytes: 0,
        }
    }

    /// Add to `out` what to record now for `event`: the event itself while within the head
    /// (and always for events that are not output, after the lines held back when it ends a
    /// step), a notice when the head is first spent, nothing for output past it (kept for the
    /// tail, or left out).
    pub(crate) fn admit(&mut self, event: NewEvent, out: &mut Vec<NewEvent>) {
        let Some(len) = line_len(&event) else {
            if ends_a_step(&event) {
                self.finish(out);
            }
            out.push(event);
            return;
        };
        let cost = len + EVENT_OVERHEAD;
        if !self.spent && self.head_used + cost <= self.limit.head_bytes {
            self.head_used += cost;
            out.push(event);
            return;
        }
        let first = !self.spent;
        self.spent = true;
        self.tail_used += cost;
        self.tail.push_back((event, cost));
        while self.tail_used > self.limit.tail_bytes {
            let Some((old, c)) = self.tail.pop_front() else {
                break;
            };
            self.tail_used -= c;
            self.left_out_lines += 1;
            self.left_out_bytes += line_len(&old).unwrap_or(0);
        }
        if first {
            // Said at once, so that whoever follows the task live knows why the lines stop.
            out.push(NewEvent::log(
                "agentpool",
                format!(
                    "the output passed this attempt's log limit ({}): further lines are held \
                     back, and the last {} of them are recorded when the step ends",
                    size(self.limit.head_bytes),
                    size(self.limit.tail_bytes)
                ),
            ));
        }
    }

    /// At the end of a step or of the run, add to `out` a line saying what was left out, if
    /// anything, then the lines held back. A second call adds nothing.
    pub(crate) fn finish(&mut self, out: &mut Vec<NewEvent>) {
        let left_out = std::mem::take(&mut self.left_out_lines);
        if left_out > 0 {
            out.push(NewEvent::log(
                "agentpool",
                format!(
                    "{} of output ({}) {} not recorded; the last {} follow",
                    count(left_out, "line"),
                    size(std::mem::take(&mut self.left_out_bytes)),
                    if left_out == 1 { "was" } else { "were" },
                    count(self.tail.len() as u64, "line"),
                ),
            ));
        }
        out.extend(self.tail.drain(..).map(|(e, _)| e));
        self.tail_used = 0;
    }
}

/// "1 line", "3 lines".
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `n` bytes in words: "8 MiB", "256 KiB", "912 bytes".
pub(crate) fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64).replace(".0 ", " "),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0).replace(".0 ", " "),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> NewEvent {
        NewEvent::log("stdout", format!("line {i:04}"))
    }

    /// What `admit` records for each of `events`, in order.
    fn admit_all(f: &mut LogFilter, events: impl IntoIterator<Item = NewEvent>) -> Vec<NewEvent> {
        let mut out = Vec::new();
        for e in events {
            f.admit(e, &mut out);
        }
        out
    }

    fn finished(f: &mut LogFilter) -> Vec<NewEvent> {
        let mut out = Vec::new();
        f.finish(&mut out);
        out
    }

    fn lines(events: &[NewEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match &e.payload {
                EventPayload::Log { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// Each test line costs 9 bytes of text plus the overhead: 73.
    const COST: u64 = 9 + EVENT_OVERHEAD;

    #[test]
    fn the_head_then_a_notice_then_at_the_end_of_each_step_what_was_left_out_and_the_tail() {
        let mut f = LogFilter::new(LogLimit {
            head_bytes: 3 * COST,
            tail_bytes: 2 * COST,
        });
        let mut live = admit_all(&mut f, (0..6).map(line));
        // Events that are not output always pass, in order; the pipeline's own line ends the
        // step, so the lines held back go before it.
        let others = [
            NewEvent::new(EventPayload::AssistantMessage { text: "hi".into() }),
            NewEvent::log("agentpool", "pushed"),
        ];
        live.extend(admit_all(&mut f, others));
        // The next step's output: the head stays spent, without a second notice.
        live.extend(admit_all(&mut f, (6..10).map(line)));
        let live_lines = lines(&live);
        assert_eq!(&live_lines[..3], ["line 0000", "line 0001", "line 0002"]);
        assert!(live_lines[3].starts_with("the output passed this attempt's log limit (219 bytes)"));
        assert_eq!(
            &live_lines[4..],
            [
                "1 line of output (9 bytes) was not recorded; the last 2 lines follow",
                "line 0004",
                "line 0005",
                "pushed"
            ]
        );
        assert_eq!(live.len(), live_lines.len() + 1, "the assistant message passed");
        assert_eq!(
            lines(&finished(&mut f)),
            [
                "2 lines of output (18 bytes) were not recorded; the last 2 lines follow",
                "line 0008",
                "line 0009"
            ]
        );
        assert!(finished(&mut f).is_empty(), "said once");
    }

    #[test]
    fn output_within_the_limit_is_recorded_as_it_comes_and_nothing_is_added() {
        let mut f = LogFilter::new(LogLimit::default());
        let live = admit_all(&mut f, (0..1000).map(line));
        assert_eq!(live.len(), 1000);
        assert!(finished(&mut f).is_empty());
    }

    #[test]
    fn past_the_head_but_within_the_tail_nothing_is_lost() {
        let mut f = LogFilter::new(LogLimit {
            head_bytes: 2 * COST,
            tail_bytes: 10 * COST,
        });
        let live = admit_all(&mut f, (0..5).map(line));
        assert_eq!(lines(&live).len(), 3, "two lines and the notice");
        assert_eq!(lines(&finished(&mut f)), ["line 0002", "line 0003", "line 0004"]);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(8 << 20), "8 MiB");
        assert_eq!(size(256 << 10), "256 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(912), "912 bytes");
    }
}
