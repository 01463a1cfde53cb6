//! `agentpool demo` runs the whole pipeline offline and succeeds.

use crate::{Env, stderr, stdout};

#[test]
fn the_demo_runs_offline_and_succeeds() {
    let env = Env::new();
    let o = env.run(&["demo", "--no-agent"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    let out = stdout(&o);
    assert!(out.contains("succeeded"), "{out}");
    assert!(out.contains("retried"), "{out}");
}
