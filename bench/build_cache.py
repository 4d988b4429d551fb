#!/usr/bin/env python3
"""Build time of the same repository cold and with a warm layer cache.

Runs `janitorctl run --local` on a repository whose Dockerfile does a few seconds of real work
in several layers, alternating cold builds (the image and its layers removed first) and warm
ones, and prints the medians of the `build` step's duration and their ratio.

Usage: .venv/bin/python bench/build_cache.py [--pairs 3] [--ctl target/release/janitorctl]
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = """FROM janitor-test-base:latest
RUN dd if=/dev/urandom of=/data bs=1M count=64 2>/dev/null && sha256sum /data > /data.sha
RUN for i in $(seq 1 40); do sha256sum /data >/dev/null; done
RUN dd if=/dev/urandom of=/weights bs=1M count=64 2>/dev/null
COPY handler.sh /handler.sh
CMD ["sh", "/handler.sh"]
"""


def build_seconds(ctl, cfg, out):
    subprocess.run([ctl, "run", "--local", cfg, "--out", out], check=True, capture_output=True)
    newest = max(glob.glob(os.path.join(out, "*", "*.json")), key=os.path.getmtime)
    report = json.load(open(newest))
    build = next(s for s in report["steps"] if s["name"] == "build")
    return build["duration_seconds"], report["cache"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--ctl", default=os.path.join(ROOT, "target/debug/janitorctl"))
    args = ap.parse_args()
    subprocess.run(["bash", os.path.join(ROOT, "scripts/base-image.sh"), "janitor-test-base:latest"], check=True)
    work = tempfile.mkdtemp(prefix="janitor-bench-cache-")
    repo = os.path.join(work, "bench-cache")
    os.makedirs(repo)
    open(os.path.join(repo, "Dockerfile"), "w").write(DOCKERFILE)
    open(os.path.join(repo, "handler.sh"), "w").write("echo ready\n")
    cfg = os.path.join(work, "cfg.yaml")
    open(cfg, "w").write("repositories:\n  - {name: bench-cache, organization: bench, url: ./bench-cache, gpu_required: false, timeout: 10m}\n")
    out = os.path.join(work, "reports")
    cold, warm = [], []
    for _ in range(args.pairs):
        subprocess.run(["docker", "rmi", "-f", "janitor/bench/bench-cache:latest"], capture_output=True)
        t, cache = build_seconds(args.ctl, cfg, out)
        assert cache["hits"] == 0, cache
        cold.append(t)
        t, cache = build_seconds(args.ctl, cfg, out)
        assert cache["hits"] == cache["steps"] - 1 or cache["hits"] >= 4, cache
        warm.append(t)
    subprocess.run(["docker", "rmi", "-f", "janitor/bench/bench-cache:latest"], capture_output=True)
    print(json.dumps({
        "pairs": args.pairs,
        "cold_build_s": cold, "warm_build_s": warm,
        "cold_median_s": statistics.median(cold), "warm_median_s": statistics.median(warm),
        "ratio_cold_over_warm": round(statistics.median(cold) / statistics.median(warm), 1),
    }, indent=2))


if __name__ == "__main__":
    main()
