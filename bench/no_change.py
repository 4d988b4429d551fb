#!/usr/bin/env python3
"""What an unchanged repository costs: the `build` step when the image is reused (its inputs'
hash matches the image's `janitor.inputs` label), beside a BuildKit round trip with every step
from the cache (forced by changing a file no step reads) and the classic `docker build` CLI;
and the whole trivial job (clone, reused build, run to exit, report) beside a bare
`docker run --rm IMAGE`. Runs `janitorctl run --local` on a one-layer repository and prints
medians and ratios as JSON.

Usage: python3 bench/no_change.py [--runs 7] [--ctl target/release/janitorctl]
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = "janitor/bench/bench-nochange:latest"
DOCKERFILE = """FROM janitor-test-base:latest
RUN echo layer > /layer
COPY handler.sh /handler.sh
CMD ["sh", "/handler.sh"]
"""


def job(ctl, cfg, out):
    """Runs the job; returns (build step seconds, job seconds, reused)."""
    subprocess.run([ctl, "run", "--local", cfg, "--out", out], check=True, capture_output=True)
    newest = max(glob.glob(os.path.join(out, "*", "*.json")), key=os.path.getmtime)
    report = json.load(open(newest))
    assert report["status"] == "succeeded", report
    build = next(s for s in report["steps"] if s["name"] == "build")
    return build["duration_seconds"], report["timings"]["duration_seconds"], report["build"].get("reused", False)


def timed(cmd, env=None):
    t = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    default_ctl = os.path.join(ROOT, "target/release/janitorctl")
    if not os.path.exists(default_ctl):
        default_ctl = os.path.join(ROOT, "target/debug/janitorctl")
    ap.add_argument("--ctl", default=default_ctl)
    args = ap.parse_args()
    subprocess.run(["bash", os.path.join(ROOT, "scripts/base-image.sh"), "janitor-test-base:latest"], check=True)
    work = tempfile.mkdtemp(prefix="janitor-bench-nochange-")
    repo = os.path.join(work, "bench-nochange")
    os.makedirs(repo)
    open(os.path.join(repo, "Dockerfile"), "w").write(DOCKERFILE)
    open(os.path.join(repo, "handler.sh"), "w").write("echo ready\n")
    untouched = os.path.join(repo, "NOTES.md")
    open(untouched, "w").write("0\n")
    cfg = os.path.join(work, "bench.yaml")
    open(cfg, "w").write("repositories:\n  - {name: bench-nochange, organization: bench, url: ./bench-nochange, gpu_required: false, timeout: 10m}\n")
    out = os.path.join(work, "reports")
    subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True)
    job(args.ctl, cfg, out)  # the first build

    reused_build, reused_job, buildkit_build = [], [], []
    for i in range(args.runs):
        b, j, reused = job(args.ctl, cfg, out)
        assert reused, "the unchanged repository was built"
        reused_build.append(b)
        reused_job.append(j)
        # A file no step reads: a BuildKit round trip, every step from the cache.
        open(untouched, "w").write(f"{i + 1}\n")
        b, _, reused = job(args.ctl, cfg, out)
        assert not reused
        buildkit_build.append(b)
        job(args.ctl, cfg, out)  # labels the image with these inputs again
    legacy = dict(os.environ, DOCKER_BUILDKIT="0")
    classic = [timed(["docker", "build", "-q", "-t", "janitor/bench/classic:latest", repo], legacy)
               for _ in range(args.runs)]
    bare = [timed(["docker", "run", "--rm", IMAGE]) for _ in range(args.runs)]
    med = statistics.median
    result = {
        "runs": args.runs,
        "reused_build_median_s": round(med(reused_build), 3),
        "buildkit_no_change_build_median_s": round(med(buildkit_build), 3),
        "classic_cli_no_change_build_median_s": round(med(classic), 3),
        "trivial_job_median_s": round(med(reused_job), 3),
        "bare_docker_run_median_s": round(med(bare), 3),
        "trivial_job_over_bare_run": round(med(reused_job) / med(bare), 2),
        "reused_over_buildkit": round(med(reused_build) / med(buildkit_build), 3),
    }
    subprocess.run(["docker", "rmi", "-f", IMAGE, "janitor/bench/classic:latest"], capture_output=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
