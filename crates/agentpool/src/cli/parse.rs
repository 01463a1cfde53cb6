//! Value parsers for flags: `K=V` pairs, labels, durations and commit authors.

/// `K=V` split at the first `=`: the value is free text (a URL); the server checks the name.
pub(super) fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    agentpool_core::spec::parse_label(s).map_err(|e| e.message)
}

/// `Name <email>` → (name, email), as git writes an author; git refuses angle brackets and
/// line breaks inside either.
pub fn parse_author(s: &str) -> Result<(String, String), String> {
    let bad = || format!("{s:?}: expected an author like \"Pool Bot <bot@example.com>\"");
    let (name, rest) = s.trim().split_once('<').ok_or_else(bad)?;
    let email = rest.strip_suffix('>').ok_or_else(bad)?.trim();
    let name = name.trim();
    let clean = |p: &str| !p.is_empty() && !p.contains(['<', '>', '\n', '\r', '\0']);
    if clean(name) && clean(email) {
        Ok((name.to_string(), email.to_string()))
    } else {
        Err(bad())
    }
}

/// An error class as the API names it, in any case (`auth_failed` is `AUTH_FAILED`).
pub fn parse_error_class(s: &str) -> Result<agentpool_core::ErrorClass, String> {
    // The error names what was typed, not its upper case.
    s.parse::<agentpool_core::ErrorClass>()
        .or_else(|e| s.to_ascii_uppercase().parse().map_err(|_| e.to_string()))
}

/// `90`, `90s`, `10m`, `1h30m`, `2h` → seconds.
pub fn parse_duration_secs(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration like 90s, 10m or 1h30m");
    if s.is_empty() {
        return Err(bad());
    }
    // Reached only because the flags take hyphen values: `--delay -5m` would otherwise be read
    // as an unknown flag `-5`, which says nothing of what is wrong.
    if s.strip_prefix('-')
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    {
        return Err(format!("{s:?}: a duration cannot be negative"));
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// A duration that cannot be zero: `--expires-in 0s` would make a token that is expired
/// from the start yet holds its name.
pub fn parse_nonzero_duration_secs(s: &str) -> Result<u64, String> {
    match parse_duration_secs(s)? {
        0 => Err(format!("{s:?}: must be longer than 0s")),
        n => Ok(n),
    }
}

/// An `http(s)://` URL with a host, kept as given (`--public-url`: links in GitHub comments).
pub fn parse_http_url(s: &str) -> Result<String, String> {
    match reqwest::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(s.to_string()),
        Ok(_) => Err(format!("{s:?}: give an http:// or https:// URL")),
        Err(e) => Err(format!("{s:?} is not a URL: {e}")),
    }
}

/// A sum of US dollars (`--max-cost-usd`, `--daily-budget-usd`). Checked here because JSON has
/// no NaN or infinity: serialized, `NaN` would become `null`, a limit silently dropped.
pub fn parse_usd(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if agentpool_core::spec::valid_usd(v) => Ok(v),
        Ok(_) => Err(format!("{s:?}: {}", agentpool_core::spec::USD_RULE)),
        Err(_) => Err(format!("{s:?} is not a number of US dollars, e.g. 2.50")),
    }
}

/// `--overlap skip|allow`.
pub fn parse_overlap(s: &str) -> Result<agentpool_core::schedule::Overlap, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_of_dollars_are_finite_and_positive() {
        assert_eq!(parse_usd("2.5"), Ok(2.5));
        assert!(parse_http_url("not a url").is_err());
        assert!(parse_http_url("ftp://x.example.com").is_err());
        assert!(parse_http_url("https://pool.example.com/").is_ok());
        assert!(parse_nonzero_duration_secs("0s").is_err());
        assert_eq!(parse_nonzero_duration_secs("1m"), Ok(60));
        for bad in ["NaN", "inf", "-inf", "0", "-3", "1e9", "two"] {
            assert!(parse_usd(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_secs("90"), Ok(90));
        assert_eq!(parse_duration_secs("90s"), Ok(90));
        assert_eq!(parse_duration_secs("10m"), Ok(600));
        assert_eq!(parse_duration_secs("1h30m"), Ok(5400));
        assert!(parse_duration_secs("1x").is_err());
        assert!(parse_duration_secs("m").is_err());
        assert!(parse_duration_secs("10m5").is_err());
        assert_eq!(
            parse_duration_secs("-5m"),
            Err("\"-5m\": a duration cannot be negative".into())
        );
        // A flag taken for the value (`--delay --command x`) is not called negative.
        assert!(
            parse_duration_secs("--command")
                .unwrap_err()
                .contains("is not a duration")
        );
    }
}
