#!/usr/bin/env python3
"""Times `janitorctl validate` on generated configs of N repositories (it must stay linear),
and checks that an alias bomb is refused with bounded memory.

Usage: python3 bench/validate.py [--bin target/release/janitorctl] [--sizes 10000,40000,100000]
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(n):
    lines = ["repositories:"]
    for i in range(n):
        lines.append(f"  - name: worker-{i}\n    organization: org-{i % 97}\n    timeout_minutes: 30")
    return "\n".join(lines) + "\n"


def bomb():
    doc = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 10):
        doc += f"a{i}: &a{i} [" + ", ".join([f"*a{i-1}"] * 10) + "]\n"
    return doc


def run(binary, path):
    t = time.perf_counter()
    out = subprocess.run([binary, "validate", path], capture_output=True, text=True)
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/debug/janitorctl"))
    ap.add_argument("--sizes", default="10000,40000,100000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="janitor-validate-")
    path = os.path.join(work, "bomb.yaml")
    with open(path, "w") as f:
        f.write(bomb())
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    took, out = run(args.bin, path)
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(f"alias bomb ({os.path.getsize(path)} bytes): exit {out.returncode} in {took:.2f} s, "
          f"peak RSS {peak / 1024:.1f} MiB: {out.stderr.strip().splitlines()[0]}")
    if out.returncode != 2:
        sys.exit("the alias bomb was not refused")
    for n in (int(s) for s in args.sizes.split(",")):
        path = os.path.join(work, f"c{n}.yaml")
        with open(path, "w") as f:
            f.write(config(n))
        times = []
        for _ in range(args.repeat):
            took, out = run(args.bin, path)
            if out.returncode != 0:
                sys.exit(f"validate failed on {n} repositories: {out.stderr[-2000:]}")
            times.append(took)
        print(f"{n:>7} repositories: median {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
