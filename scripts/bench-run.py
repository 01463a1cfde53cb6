#!/usr/bin/env python3
"""Time `agentpool run --repo remote.git --command true` end to end (a transient embedded pool
starts, registers its workers, runs the task through the whole pipeline and stops), for one or
more agentpool binaries side by side (A/B in one run, alternating which goes first), with and
without the pinned agent CLIs installed (`AGENTPOOL_AGENT_BIN_DIR`).

    python3 scripts/bench-run.py --bin new=target/release/agentpool --bin old=/path/to/old \\
        --agents tools/agents/node_modules/.bin --runs 10

Each run has a fresh data directory; the bare repository is made once.
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import time


def bare_repo(root):
    work = os.path.join(root, "work")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@agentpool.test"]
    subprocess.run(["git", "init", "-q", "-b", "main", work], check=True)
    with open(os.path.join(work, "README.md"), "w") as f:
        f.write("bench\n")
    subprocess.run(git + ["-C", work, "add", "."], check=True)
    subprocess.run(git + ["-C", work, "commit", "-q", "-m", "init"], check=True)
    remote = os.path.join(root, "remote.git")
    subprocess.run(["git", "clone", "-q", "--bare", work, remote], check=True)
    return remote


def one(binary, remote, agents, root):
    env = dict(os.environ)
    env.pop("AGENTPOOL_SERVER", None)
    env["AGENTPOOL_DATA_DIR"] = tempfile.mkdtemp(dir=root)
    if agents:
        env["AGENTPOOL_AGENT_BIN_DIR"] = agents
    else:
        # No agent CLI to find: neither in a bin dir nor on PATH.
        env.pop("AGENTPOOL_AGENT_BIN_DIR", None)
        env["PATH"] = "/usr/bin:/bin"
    start = time.time()
    subprocess.run(
        [binary, "run", "--repo", remote, "--command", "true"],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.time() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", action="append", required=True, help="NAME=PATH, repeatable")
    p.add_argument("--agents", help="the agent CLIs' bin dir (tools/agents/node_modules/.bin)")
    p.add_argument("--runs", type=int, default=10)
    a = p.parse_args()
    bins = [b.split("=", 1) for b in a.bin]
    cases = [("no agent CLIs", None)] + ([("agent CLIs installed", a.agents)] if a.agents else [])
    with tempfile.TemporaryDirectory() as root:
        remote = bare_repo(root)
        for label, agents in cases:
            times = {name: [] for name, _ in bins}
            for i in range(a.runs):
                order = bins if i % 2 == 0 else list(reversed(bins))
                for name, path in order:
                    times[name].append(one(path, remote, agents, root))
            for name, _ in bins:
                t = times[name]
                print(
                    f"{label:22} {name:8} median {statistics.median(t):.2f} s  "
                    f"min {min(t):.2f}  max {max(t):.2f}  ({len(t)} runs)"
                )


if __name__ == "__main__":
    main()
