#!/usr/bin/env python3
"""Build time of the same repository cold and with a warm cache, BuildKit beside classic.

Runs `janitorctl run --local` on a repository whose Dockerfile does a few seconds of real work
in several layers, with each builder in turn (`builder: buildkit`, the default, and
`builder: classic`), alternating cold builds (the image removed first, and for BuildKit its
build cache: `docker builder prune -af`, which is machine-wide, so run this on a machine of
its own) and warm ones, and prints per builder the medians of the `build` step's duration,
their ratio, and BuildKit's cold and warm medians over classic's.

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
    out = os.path.join(work, "reports")
    result = {"pairs": args.pairs}
    for builder in ("buildkit", "classic"):
        cfg = os.path.join(work, f"{builder}.yaml")
        open(cfg, "w").write("repositories:\n  - {name: bench-cache, organization: bench, url: ./bench-cache, gpu_required: false, timeout: 10m, builder: %s}\n" % builder)
        cold, warm = [], []
        for _ in range(args.pairs):
            subprocess.run(["docker", "rmi", "-f", "janitor/bench/bench-cache:latest"], capture_output=True)
            if builder == "buildkit":
                subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True, check=True)
            t, cache = build_seconds(args.ctl, cfg, out)
            assert cache["hits"] == 0, cache
            cold.append(t)
            # A file no step reads: unchanged inputs would reuse the image without building.
            open(os.path.join(repo, "NOTES.md"), "w").write(f"{len(warm)}\n")
            t, cache = build_seconds(args.ctl, cfg, out)
            # Every step but the classic builder's FROM (BuildKit does not count the FROM).
            assert cache["hits"] >= cache["steps"] - 1, cache
            warm.append(t)
        subprocess.run(["docker", "rmi", "-f", "janitor/bench/bench-cache:latest"], capture_output=True)
        result[builder] = {
            "cold_build_s": cold, "warm_build_s": warm,
            "cold_median_s": statistics.median(cold), "warm_median_s": statistics.median(warm),
            "ratio_cold_over_warm": round(statistics.median(cold) / statistics.median(warm), 1),
        }
    for phase in ("cold", "warm"):
        result[f"buildkit_over_classic_{phase}"] = round(
            result["buildkit"][f"{phase}_median_s"] / result["classic"][f"{phase}_median_s"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
