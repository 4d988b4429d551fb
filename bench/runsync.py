#!/usr/bin/env python3
"""Measures what the test step adds per test over a direct request to the worker's /runsync.

Builds a runpod worker (the real SDK, from scripts/runpod-image.sh) with N trivial tests in
.runpod/tests.json, then
  direct  : starts the image in server mode itself (docker run -p, RUNPOD_REALTIME_PORT) and
            times N POST /runsync requests, a new connection each, as the test step makes them
  janitor : runs the same repository through `janitorctl run --local` (the pipeline janitord
            runs) and reads each test's duration from the report
and prints the medians, the per-test overhead (janitor - direct), the cold start, and what the
step spends besides its tests (container start and stop).

Usage: .venv/bin/python bench/runsync.py [--tests 30] [--ctl target/release/janitorctl]
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HANDLER = """import runpod

def handler(job):
    return {"echo": job["input"]["i"]}

runpod.serverless.start({"handler": handler})
"""


def image_name():
    with open(os.path.join(ROOT, "testkit/runpod-requirements.txt")) as f:
        for line in f:
            if line.startswith("runpod=="):
                return "janitor-runpod-base:" + line.strip().split("==", 1)[1]
    raise SystemExit("testkit/runpod-requirements.txt pins no runpod version")


def post(url, body):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
    return time.perf_counter() - t


def direct(tag, n):
    cid = subprocess.run(
        ["docker", "run", "-d", "--rm", "-e", "RUNPOD_REALTIME_PORT=8000", "-p", "127.0.0.1::8000", tag],
        check=True, capture_output=True, text=True).stdout.strip()
    try:
        port = subprocess.run(["docker", "port", cid, "8000/tcp"], check=True, capture_output=True,
                              text=True).stdout.split()[0]
        url = f"http://{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/ping", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except Exception:
                time.sleep(0.1)
        post(url + "/runsync", b'{"input": {"i": -1}}')  # warm, as the cold start is not a test
        return [post(url + "/runsync", json.dumps({"input": {"i": i}}).encode()) for i in range(n)]
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", type=int, default=30)
    default_ctl = os.path.join(ROOT, "target/release/janitorctl")
    if not os.path.exists(default_ctl):
        default_ctl = os.path.join(ROOT, "target/debug/janitorctl")
    ap.add_argument("--ctl", default=default_ctl)
    args = ap.parse_args()

    subprocess.run(["bash", os.path.join(ROOT, "scripts/runpod-image.sh")], check=True)
    work = tempfile.mkdtemp(prefix="janitor-bench-runsync-")
    repo = os.path.join(work, "bench-worker")
    os.makedirs(os.path.join(repo, ".runpod"))
    with open(os.path.join(repo, "handler.py"), "w") as f:
        f.write(HANDLER)
    with open(os.path.join(repo, "Dockerfile"), "w") as f:
        f.write(f'FROM {image_name()}\nCOPY handler.py /handler.py\nCMD ["python3", "-u", "/handler.py"]\n')
    tests = [{"name": f"t{i:03d}", "input": {"i": i}, "expected_output": {"echo": i}} for i in range(args.tests)]
    with open(os.path.join(repo, ".runpod/tests.json"), "w") as f:
        json.dump({"tests": tests}, f)
    tag = "janitor-bench/runsync:latest"
    subprocess.run(["docker", "build", "-q", "-t", tag, repo], check=True, capture_output=True,
                   env={**os.environ, "DOCKER_BUILDKIT": "0"})

    d = direct(tag, args.tests)

    cfg = os.path.join(work, "bench.yaml")
    with open(cfg, "w") as f:
        f.write("repositories:\n  - {name: bench-worker, organization: local, url: ./bench-worker, "
                "gpu_required: false, timeout: 10m}\n")
    out = os.path.join(work, "reports")
    subprocess.run([args.ctl, "run", "--local", "--out", out, cfg], check=True, capture_output=True)
    [path] = glob.glob(os.path.join(out, "*", "bench-worker-*.json"))
    with open(path) as f:
        report = json.load(f)
    t = report["tests"]
    if t["passed"] != args.tests:
        raise SystemExit(f"only {t['passed']}/{args.tests} tests passed: {report.get('reason')}")
    j = [r["duration_seconds"] for r in t["results"]]
    step = next(s for s in report["steps"] if s["name"] == "test")
    besides = step["duration_seconds"] - t["cold_start_seconds"] - sum(j)
    md, mj = statistics.median(d) * 1000, statistics.median(j) * 1000
    print(f"tests: {args.tests}")
    print(f"direct  /runsync median: {md:.1f} ms")
    print(f"janitor /runsync median: {mj:.1f} ms")
    print(f"overhead per test (median janitor - median direct): {mj - md:+.1f} ms")
    print(f"cold start (container start -> first HTTP answer): {t['cold_start_seconds']:.2f} s")
    print(f"test step besides the cold start and the tests (start, stop): {besides:.2f} s")


if __name__ == "__main__":
    main()
