#!/usr/bin/env python3
"""Time `agentpool tasks cancel` and `tasks retry` on every task a label filter matches, for
one or more agentpool binaries side by side (A/B in one run, alternating which goes first).

Each run starts `agentpool up --workers 0` (server only; SQLite in a fresh data dir, or a fresh
PostgreSQL database), submits N queued tasks with one label through the API (batches of
1000), then times the two commands end to end: listing the matches, acting on them, printing.

    python3 scripts/bench-bulk.py --bin new=target/release/agentpool --bin old=/path/to/old \\
        --backend postgres --tasks 10000 --runs 3

PostgreSQL: `source scripts/services.sh` first (it exports AGENTPOOL_TEST_PG_URL).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def wait_ready(url, proc, secs=60):
    deadline = time.time() + secs
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"agentpool up exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("agentpool up did not become ready")


def psql(admin_url, sql):
    subprocess.run(["psql", admin_url, "-q", "-c", sql], check=True, capture_output=True)


def one_run(binary, backend, tasks, run_no, name):
    work = tempfile.mkdtemp(prefix="bench-bulk-")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [binary, "--data-dir", work, "up", "--workers", "0", "--listen", f"127.0.0.1:{port}"]
    db = None
    if backend == "postgres":
        admin = os.environ["AGENTPOOL_TEST_PG_URL"]
        db = f"bench_bulk_{name}_{run_no}".replace("-", "_")
        psql(admin, f"DROP DATABASE IF EXISTS {db}")
        psql(admin, f"CREATE DATABASE {db}")
        cmd += ["--database-url", admin.rsplit("/", 1)[0] + "/" + db]
    up = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, up)
        spec = {
            "kind": "command",
            "repo": "https://git.example.com/app.git",
            "command": "true",
            "labels": {"bench": "bulk"},
        }
        left = tasks
        while left > 0:
            n = min(1000, left)
            post(url + "/v1/tasks", {"tasks": [spec] * n})
            left -= n
        times = {}
        for action in ["cancel", "retry"]:
            t0 = time.perf_counter()
            out = subprocess.run(
                [binary, "--server", url, "tasks", action, "--label", "bench=bulk"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            times[action] = time.perf_counter() - t0
            if out.returncode != 0:
                raise SystemExit(f"{name} tasks {action}: exit {out.returncode}: {out.stderr}")
            said = out.stderr.strip().splitlines()[-1]
            if str(tasks) not in said:
                raise SystemExit(f"{name} tasks {action}: {said!r}")
        return times
    finally:
        up.terminate()
        up.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
        if db:
            psql(os.environ["AGENTPOOL_TEST_PG_URL"], f"DROP DATABASE IF EXISTS {db}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", action="append", required=True, help="NAME=PATH, repeatable")
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    bins = [b.split("=", 1) for b in a.bin]
    results = {name: {"cancel": [], "retry": []} for name, _ in bins}
    for run in range(a.runs):
        order = bins if run % 2 == 0 else list(reversed(bins))
        for name, path in order:
            t = one_run(path, a.backend, a.tasks, run, name)
            for k, v in t.items():
                results[name][k].append(v)
            print(f"run {run + 1} {name}: cancel {t['cancel']:.2f} s, retry {t['retry']:.2f} s", flush=True)
    print(f"\n{a.backend}, {a.tasks} tasks, {a.runs} runs: median (min-max) seconds")
    for name, _ in bins:
        cells = []
        for k in ["cancel", "retry"]:
            v = results[name][k]
            cells.append(f"{k} {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})")
        print(f"  {name}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
