//! Fuzz target: every agent CLI's output parser, fed the input line by line and then asked
//! for the run's outcome. The parsers promise never to panic and to turn every non-blank line
//! into at least one event; this checks both on arbitrary output.
#![no_main]

use agentpool_agents::cli::{LineParser, finish};
use agentpool_agents::process::ProcessOutcome;
use agentpool_agents::{claude_code, codex, gemini, opencode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsers: [Box<dyn LineParser>; 4] = [
        Box::new(claude_code::Parser::default()),
        Box::new(codex::Parser::default()),
        Box::new(gemini::Parser::default()),
        Box::new(opencode::Parser::default()),
    ];
    for mut p in parsers {
        for line in text.lines() {
            let events = p.parse_line(line);
            assert!(line.trim().is_empty() || !events.is_empty(), "no event for {line:?}");
        }
        for code in [0, 1] {
            let exit = ProcessOutcome {
                exit_code: Some(code),
                signal: None,
                killed: None,
                pgid: 0,
                duration: std::time::Duration::ZERO,
                output_bytes: data.len() as u64,
            };
            let o = finish(p.as_ref(), &exit, &[]);
            if code != 0 {
                assert!(o.is_error && o.error_class.is_some());
            }
        }
    }
});
