//! What an agent's error text says: the HTTP status it names, the error class of its words,
//! and a retry-after hint, for the adapters whose CLIs report failures as free text.

use std::time::Duration;

use agentpool_core::ErrorClass;

/// An HTTP status named in an error text: `status 401`, `last status: 429`, `"code":401`,
/// `statusCode":429`.
pub fn status_in(text: &str) -> Option<u16> {
    let t = text.to_ascii_lowercase();
    for key in [
        "status:",
        "status",
        "statuscode\":",
        "\"code\":",
        "request rejected (",
    ] {
        let mut from = 0;
        while let Some(i) = t[from..].find(key) {
            let start = from + i + key.len();
            let rest = t[start..].trim_start_matches([' ', '"', '\\']);
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if digits.len() == 3
                && let Ok(n) = digits.parse::<u16>()
                && (400..600).contains(&n)
            {
                return Some(n);
            }
            from = start;
        }
    }
    None
}

/// The class of a free-text error: a named HTTP status first, else the keywords of docs/guarantees.md on the
/// text with URLs removed (a port such as `:34291` must not read as a 429).
pub fn classify_text(text: &str) -> Option<ErrorClass> {
    if let Some(status) = status_in(text)
        && let Some(c) = class_of_status(status)
    {
        return Some(c);
    }
    let without_urls: String = text
        .split_whitespace()
        .filter(|w| !w.contains("://"))
        .collect::<Vec<_>>()
        .join(" ");
    let lower = without_urls.to_ascii_lowercase();
    if lower.contains("resource has been exhausted") || lower.contains("resource_exhausted") {
        return Some(ErrorClass::RateLimited);
    }
    if lower.contains("missing environment variable") && lower.contains("key") {
        return Some(ErrorClass::AuthFailed);
    }
    ErrorClass::from_message(&without_urls)
}

/// The error class of an HTTP status an agent reports from its model API.
pub fn class_of_status(status: u16) -> Option<ErrorClass> {
    match status {
        401 | 403 => Some(ErrorClass::AuthFailed),
        429 | 529 => Some(ErrorClass::RateLimited),
        _ => None,
    }
}

/// A retry-after hint inside free text: "retry after 1s", "retry-after: 30", "retryDelay":"2s".
pub fn retry_after_in(text: &str) -> Option<Duration> {
    let t = text.to_ascii_lowercase();
    for key in ["retry after", "retry-after", "retrydelay", "retry_after"] {
        if let Some(i) = t.find(key) {
            let rest = &t[i + key.len()..];
            let digits: String = rest
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            // Only trust a number that follows closely (not one from elsewhere in the text).
            let gap = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(usize::MAX);
            if gap <= 4
                && let Ok(secs) = digits.parse::<f64>()
                && secs.is_finite()
                && (0.0..86_400.0).contains(&secs)
            {
                return Some(Duration::from_millis((secs * 1000.0) as u64));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_hints_are_found() {
        assert_eq!(
            retry_after_in("Suggested retry after 1s."),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            retry_after_in("\"retry-after\":\"30\""),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after_in("429 Too Many Requests"), None);
    }

    #[test]
    fn statuses_are_read_from_agent_error_texts() {
        assert_eq!(status_in("unexpected status 401 Unauthorized: x"), Some(401));
        assert_eq!(
            status_in("exceeded retry limit, last status: 429 Too Many Requests"),
            Some(429)
        );
        assert_eq!(
            status_in(r#"[API Error: {"error":{"code":401,"message":"no"}}]"#),
            Some(401)
        );
        assert_eq!(
            classify_text("connection refused, url: http://127.0.0.1:34291/v1/responses"),
            None
        );
        assert_eq!(
            classify_text("Missing environment variable: `OPENAI_API_KEY`."),
            Some(ErrorClass::AuthFailed)
        );
    }
}
