//! Reading agent events' JSON for people, the same in the CLI and the dashboard: the first
//! string among a payload's candidate fields, a usage event's tokens and cost, and the one
//! argument that says what a tool call does; text cut to a length for a column or a field; and
//! a count with its noun ("1 file", "3 files").

use serde_json::Value;

/// `n` and the noun that goes with it: `one` for 1, else `many` ("1 check", "0 checks").
pub fn count<N>(n: N, one: &str, many: &str) -> String
where
    N: Copy + PartialEq + From<u8> + std::fmt::Display,
{
    let noun = if n == N::from(1) { one } else { many };
    format!("{n} {noun}")
}

/// `s` cut to at most `max` characters, the last of them `…` when it was cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// The first of `keys` whose value in `v` is a string.
pub fn str_field<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_str))
}

/// A usage event's count of `key` tokens (`input_tokens`, `output_tokens`, …); 0 when absent.
pub fn usage_tokens(d: &Value, key: &str) -> u64 {
    d.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// A usage event's cost as `, $0.0123`; empty when it reports none.
pub fn usage_cost(d: &Value) -> String {
    d.get("cost_usd")
        .and_then(Value::as_f64)
        .map(|c| format!(", ${c:.4}"))
        .unwrap_or_default()
}

/// The one argument that says what a tool call does: the command, the file, the pattern…
pub fn tool_key_argument(input: &Value) -> Option<String> {
    let keys = [
        "command",
        "cmd",
        "file_path",
        "filePath",
        "path",
        "absolute_path",
        "pattern",
        "url",
        "query",
        "description",
    ];
    if let Some(s) = str_field(input, &keys) {
        return Some(s.to_string());
    }
    if let Some(arr) = input.get("command").and_then(Value::as_array) {
        let parts: Vec<&str> = arr.iter().filter_map(Value::as_str).collect();
        if !parts.is_empty() {
            return Some(parts.join(" "));
        }
    }
    match input {
        Value::String(s) => Some(s.clone()),
        _ => input
            .as_object()
            .and_then(|o| o.values().find_map(Value::as_str))
            .map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_counts_characters_and_marks_the_cut() {
        assert_eq!(super::clip("héllo", 5), "héllo");
        assert_eq!(super::clip("héllo wörld", 6), "héllo…");
        assert_eq!(super::clip("ab", 1), "…");
    }

    #[test]
    fn count_takes_the_noun_for_one_or_for_many() {
        assert_eq!(super::count(1usize, "file", "files"), "1 file");
        assert_eq!(super::count(0u32, "file", "files"), "0 files");
        assert_eq!(super::count(2u64, "dependent", "dependents"), "2 dependents");
    }
}
