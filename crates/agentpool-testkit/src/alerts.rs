//! The alerting rules shipped in `deploy/prometheus/alerts.yaml`, read as Prometheus reads a
//! rule file, every expression parsed by a PromQL parser (a port of Prometheus's own grammar),
//! and checked against a scrape of the metrics agentpool really exports: each series a rule
//! selects must exist, with the labels and label values the rule names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde::Deserialize;

/// Where the rules are, in the repository.
pub fn rules_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/alerts.yaml")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

/// One alerting rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub alert: String,
    pub expr: String,
    #[serde(rename = "for")]
    pub for_: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// The rules of group `group` in the rule file `text`; why not, when the file is not a rule
/// file, the group is missing, or an expression does not parse.
pub fn group(text: &str, group: &str) -> Result<Vec<Rule>, String> {
    let file: RuleFile = serde_yaml::from_str(text).map_err(|e| format!("not a rule file: {e}"))?;
    let rules = file
        .groups
        .into_iter()
        .find(|g| g.name == group)
        .ok_or_else(|| format!("no group {group:?}"))?
        .rules;
    for r in &rules {
        promql_parser::parser::parse(&r.expr).map_err(|e| format!("{}: {e}", r.alert))?;
        if let Some(d) = &r.for_ {
            promql_parser::util::parse_duration(d).map_err(|e| format!("{}: for: {e}", r.alert))?;
        }
    }
    Ok(rules)
}

/// The shipped rules of `name` are well formed and select only series `scrape` has.
pub fn assert_group_fits(name: &str, scrape: &str) {
    let file = std::fs::read_to_string(rules_path()).expect("the rule file");
    let rules = group(&file, name).unwrap_or_else(|e| panic!("group {name}: {e}"));
    assert_well_formed(&rules);
    assert_eq!(
        problems(&rules, &exported(scrape)),
        Vec::<String>::new(),
        "{scrape}"
    );
}

/// What every shipped rule carries, whatever it watches.
pub fn assert_well_formed(rules: &[Rule]) {
    assert!(!rules.is_empty());
    for r in rules {
        let severity = r.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{}: severity {severity:?}",
            r.alert
        );
        for a in ["summary", "description"] {
            assert!(
                r.annotations.get(a).is_some_and(|t| !t.trim().is_empty()),
                "{}: no {a}",
                r.alert
            );
        }
    }
}

/// Metric name → (label name → the values seen), from a Prometheus text exposition. A
/// histogram's `_bucket`, `_sum` and `_count` series count under their own names.
pub fn exported(text: &str) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        let Some(body) = line[name_end..].strip_prefix('{') else {
            continue;
        };
        // `name="value"` pairs; agentpool's label values hold no quotes or commas.
        let body = &body[..body.find('}').unwrap_or(body.len())];
        for pair in body.split(',').filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once('=') {
                labels
                    .entry(k.to_string())
                    .or_default()
                    .insert(v.trim_matches('"').to_string());
            }
        }
    }
    out
}

/// What is wrong with `rules` against `exported`: a selected metric that is not exported, a
/// label it does not have, or an exact label value never seen.
pub fn problems(
    rules: &[Rule],
    exported: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules {
        let Ok(expr) = promql_parser::parser::parse(&r.expr) else {
            out.push(format!("{}: does not parse", r.alert));
            continue;
        };
        let mut selectors = Selectors::default();
        let _ = walk_expr(&mut selectors, &expr);
        for vs in &selectors.0 {
            let Some(name) = &vs.name else {
                out.push(format!("{}: a selector without a metric name", r.alert));
                continue;
            };
            let Some(labels) = exported.get(name) else {
                out.push(format!("{}: {name} is not exported", r.alert));
                continue;
            };
            for m in &vs.matchers.matchers {
                match labels.get(&m.name) {
                    None => out.push(format!("{}: {name} has no label {}", r.alert, m.name)),
                    Some(values) if matches!(m.op, MatchOp::Equal) && !values.contains(&m.value) => out.push(
                        format!("{}: {name}{{{}={:?}}} was never seen", r.alert, m.name, m.value),
                    ),
                    Some(_) => {}
                }
            }
        }
    }
    out
}

/// The vector selectors of an expression, matrix selectors' included.
#[derive(Default)]
struct Selectors(Vec<VectorSelector>);

impl ExprVisitor for Selectors {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        match expr {
            Expr::VectorSelector(vs) => self.0.push(vs.clone()),
            Expr::MatrixSelector(ms) => self.0.push(ms.vs.clone()),
            _ => {}
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: max(m{s=\"x\"}) > 0\n        for: 5m\n        labels: {severity: warning}\n        annotations: {summary: s}\n";

    #[test]
    fn rules_are_checked_against_what_is_exported() {
        let rules = group(FILE, "g").unwrap();
        let seen = exported("# HELP m x\nm{s=\"x\"} 1\nm{s=\"y\"} 0\n");
        assert!(problems(&rules, &seen).is_empty());
        let other = exported("m{s=\"y\"} 0\nn 1\n");
        assert_eq!(problems(&rules, &other), [r#"A: m{s="x"} was never seen"#]);
        assert_eq!(problems(&rules, &exported("n 1\n")), ["A: m is not exported"]);
    }

    #[test]
    fn a_rule_that_does_not_parse_is_refused() {
        let broken = FILE.replace(r#"max(m{s="x"}) > 0"#, r#"max(m{s="x"} > 0"#);
        assert_ne!(broken, FILE);
        assert!(group(&broken, "g").unwrap_err().starts_with("A: "));
        assert!(group(FILE, "nope").is_err());
    }
}
