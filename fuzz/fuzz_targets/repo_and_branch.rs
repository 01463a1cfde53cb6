//! Fuzz target: repository URL and branch validation. Whatever is accepted must be safe to
//! hand to git: no option-looking value (`-…`, a host or user starting with '-'), no control,
//! whitespace or invisible character, no remote-helper transport; a branch must be a name
//! `git check-ref-format --branch` accepts and not a full ref.
#![no_main]

use agentpool_core::spec::{BranchName, RepoUrl, is_invisible};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for allow_local in [false, true] {
        if let Ok(url) = RepoUrl::parse(s, allow_local) {
            let u = url.as_str();
            assert!(!u.starts_with('-'), "{u:?}");
            assert!(!u.contains("::"), "{u:?}");
            assert!(
                !u.chars().any(|c| c.is_control() || c.is_whitespace() || is_invisible(c)),
                "{u:?}"
            );
            if let Some(rest) = ["ssh://", "https://", "http://"]
                .iter()
                .find_map(|p| u.to_ascii_lowercase().strip_prefix(p).map(str::to_string))
            {
                let authority = rest.split('/').next().unwrap_or("");
                let (user, host) = authority.rsplit_once('@').unwrap_or(("", authority));
                assert!(!host.starts_with('-') && !user.starts_with('-'), "{u:?}");
            }
            if !allow_local {
                assert!(!url.is_local(), "{u:?}");
            }
        }
    }
    if let Ok(b) = BranchName::parse(s) {
        let b = b.as_str();
        assert!(!b.starts_with('-') && !b.starts_with("refs/"), "{b:?}");
        assert!(!b.contains("..") && !b.contains("@{") && !b.contains("//"), "{b:?}");
        assert!(
            !b.chars().any(|c| c.is_control() || is_invisible(c) || " ~^:?*[\\".contains(c)),
            "{b:?}"
        );
    }
});
