#!/usr/bin/env python3
"""What a hostile repository's files cost janitorctl: `janitorctl run --local` on a repository
whose Dockerfile is a committed link to /dev/zero, and on one whose agent links the Dockerfile
to a FIFO hidden by .gitignore (the open that used to block past the job's deadline), beside a
plain repository that passes. Prints, for each, the median wall time and peak resident memory
of janitorctl (GNU time's maximum RSS) and its verdict, as JSON.

Usage: python3 bench/hostile_reads.py [--runs 5] [--ctl target/debug/janitorctl]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "janitor-test-base:latest"
AGENT = "janitor-bench-fifo-agent:latest"
WORKER = f"""FROM {BASE}
RUN mkdir -p /models && echo weights > /models/tiny.bin
COPY config.env /config.env
CMD ["sh", "-c", ". /config.env; test -f $MODEL || {{ echo ERROR: no $MODEL; exit 1; }}"]
"""
AGENT_SCRIPT = """#!/bin/sh
set -eu
cd /workspace
rm -f Dockerfile
mkfifo .build.fifo && echo .build.fifo >> .gitignore && ln -s .build.fifo Dockerfile
sed -i 's#/models/large.bin#/models/tiny.bin#' config.env
printf '{"status":"fixed","summary":"fifo"}' > "$JANITOR_RESULT"
"""


def git(repo, *args):
    subprocess.run(["git", "-C", repo, "-c", "user.name=b", "-c", "user.email=b@b", *args], check=True, capture_output=True)


def repository(work, name, files, link=None):
    repo = os.path.join(work, name)
    os.makedirs(repo)
    for path, text in files.items():
        open(os.path.join(repo, path), "w").write(text)
    if link:
        os.symlink(link[1], os.path.join(repo, link[0]))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "init")
    return repo


def run(ctl, work, name, extra):
    cfg = os.path.join(work, f"{name}.yaml")
    open(cfg, "w").write(
        f"repositories:\n  - {{name: {name}, organization: bench, url: ./{name}, gpu_required: false, timeout: 4m, max_fix_attempts: 1{extra}}}\n"
    )
    t = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-v", ctl, "run", "--local", cfg, "--out", os.path.join(work, "reports")], capture_output=True, text=True)
    took = time.monotonic() - t
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    verdict = re.search(rf"[✓✗] {re.escape(name)}: (\w+)", p.stdout + p.stderr)
    return took, rss / 1024, verdict.group(1) if verdict else "none"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--ctl", default=os.path.join(ROOT, "target/debug/janitorctl"))
    args = ap.parse_args()
    subprocess.run(["bash", os.path.join(ROOT, "scripts/base-image.sh"), BASE], check=True)
    with tempfile.TemporaryDirectory(prefix="janitor-bench-agent-") as d:
        open(os.path.join(d, "agent.sh"), "w").write(AGENT_SCRIPT)
        os.chmod(os.path.join(d, "agent.sh"), 0o755)
        open(os.path.join(d, "Dockerfile"), "w").write(f'FROM {BASE}\nCOPY agent.sh /agent.sh\nCMD ["/agent.sh"]\n')
        subprocess.run(["docker", "build", "-q", "-t", AGENT, d], check=True, capture_output=True)
    work = tempfile.mkdtemp(prefix="janitor-bench-hostile-")
    broken = {"Dockerfile": WORKER, "config.env": "MODEL=/models/large.bin\n"}
    repository(work, "plain", {"Dockerfile": WORKER, "config.env": "MODEL=/models/tiny.bin\n"})
    repository(work, "zero", {"README.md": "x\n"}, link=("Dockerfile", "/dev/zero"))
    repository(work, "fifo", broken)
    cases = {"plain": "", "zero": "", "fifo": f", agent_image: '{AGENT}'"}
    out = {}
    for name, extra in cases.items():
        runs = [run(args.ctl, work, name, extra) for _ in range(args.runs)]
        out[name] = {
            "median_seconds": round(statistics.median(r[0] for r in runs), 3),
            "median_max_rss_mib": round(statistics.median(r[1] for r in runs), 1),
            "max_rss_mib": round(max(r[1] for r in runs), 1),
            "verdicts": sorted({r[2] for r in runs}),
        }
    print(json.dumps({"runs": args.runs, "ctl": args.ctl, "cases": out}, indent=2))


if __name__ == "__main__":
    main()
