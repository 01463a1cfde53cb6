//! Fuzz target: the webhook signature check (`X-Hub-Signature-256`). Whatever the secret, body
//! and header, `verify` must not panic; the header `sign` makes must verify; and a header it
//! accepts must carry the body's MAC under that secret, never anything else.
//!
//! The module is compiled from its source file rather than through the `agentpool-github`
//! crate: it needs only `hmac` and `sha2`, while the crate would bring its HTTP client (TLS,
//! ring) into every instrumented fuzz build, minutes of CI time for code this target never
//! calls.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/agentpool-github/src/signature.rs"]
mod signature;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Layout: [secret length][mode][secret][rest]. Mode 0: `rest` is `header\nbody`, an
    // arbitrary header. Otherwise `rest` is `edits\nbody`: the right header for the body,
    // changed at the byte positions and to the values the `edits` pairs name.
    let [secret_len, mode, rest @ ..] = data else {
        return;
    };
    let n = usize::from(*secret_len).min(rest.len());
    let (secret, rest) = rest.split_at(n);
    let (head, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let good = signature::sign(secret, body);
    assert!(signature::verify(secret, body, &good), "own signature refused");
    let header = if *mode == 0 {
        String::from_utf8_lossy(head).into_owned()
    } else {
        let mut h = good.clone().into_bytes();
        for pair in head.chunks_exact(2) {
            let at = usize::from(pair[0]) % h.len();
            h[at] = pair[1];
        }
        String::from_utf8_lossy(&h).into_owned()
    };
    if signature::verify(secret, body, &header) {
        // Judged on the decoded bytes: hex digits may come in either case.
        let hex = header
            .strip_prefix("sha256=")
            .expect("accepted without the sha256= prefix");
        assert_eq!(
            decode(hex),
            decode(&good["sha256=".len()..]),
            "accepted {header:?} for {good:?}"
        );
    }
});

fn decode(hex: &str) -> Option<Vec<u8>> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    bytes
        .chunks(2)
        .map(|p| {
            if !p.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            std::str::from_utf8(p)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
        })
        .collect()
}
