//! The text of the one status comment agentpool keeps on a triggering issue or pull request,
//! rewritten in place as the task moves (queued, running, succeeded or failed).

use agentpool_core::github::PullRequestRef;

/// Marks agentpool's own comments (and keeps them from being read as commands).
pub const MARKER: &str = "<!-- agentpool:status -->";

/// What the comment shows.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView<'a> {
    pub task_id: &'a str,
    /// `queued`, `running`, `succeeded`, `failed`, `canceled`.
    pub state: &'a str,
    /// Link to the task on agentpool's dashboard, when the server knows its public URL.
    pub task_url: Option<String>,
    pub pull_request: Option<&'a PullRequestRef>,
    pub cost_usd: Option<f64>,
    pub error_class: Option<&'a str>,
    /// Why a pull request could not be opened, when that failed.
    pub note: Option<&'a str>,
}

pub fn render(v: &StatusView<'_>) -> String {
    let icon = match v.state {
        "succeeded" => "✅",
        "failed" => "❌",
        "canceled" => "⏹️",
        "running" => "⏳",
        _ => "🕒",
    };
    let task = match &v.task_url {
        Some(u) => format!("[`{}`]({u})", v.task_id),
        None => format!("`{}`", v.task_id),
    };
    let mut out = format!("{MARKER}\n{icon} **agentpool** task {task}: **{}**\n", v.state);
    if let Some(pr) = v.pull_request {
        out.push_str(&format!(
            "\n- Pull request: [#{}]({}) ({})",
            pr.number, pr.url, pr.state
        ));
    }
    if let Some(c) = v.cost_usd {
        out.push_str(&format!("\n- Cost: ${c:.2}"));
    }
    if let Some(e) = v.error_class {
        out.push_str(&format!("\n- Error: `{e}`"));
    }
    if let Some(n) = v.note {
        out.push_str(&format!("\n- Note: {n}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_state_pull_request_cost_and_error() {
        let pr = PullRequestRef {
            number: 7,
            url: "https://github.com/o/r/pull/7".into(),
            state: "open".into(),
        };
        let s = render(&StatusView {
            task_id: "t1",
            state: "succeeded",
            task_url: Some("https://pool/tasks/t1".into()),
            pull_request: Some(&pr),
            cost_usd: Some(0.125),
            error_class: None,
            note: None,
        });
        assert!(s.starts_with(MARKER));
        assert!(s.contains("[`t1`](https://pool/tasks/t1): **succeeded**"));
        assert!(s.contains("[#7](https://github.com/o/r/pull/7) (open)"));
        assert!(s.contains("Cost: $0.1"));
    }
}
