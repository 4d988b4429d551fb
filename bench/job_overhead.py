#!/usr/bin/env python3
"""Measures what janitord adds around a job, and its idle memory.

Runs the real janitord (target/debug or --bin) against the moto fixture and the local Docker:
N trivial jobs in a row, then reports the medians of
  setup_ms  : message received -> pipeline started (decode, started record, log stream, keep-alive)
  report_ms : pipeline ended (container exited and removed) -> report stored, message deleted
              (includes flushing the job's output to CloudWatch)
and the resident memory and CPU of an idle daemon polling an empty queue, its /health and
/metrics server running.

Usage: .venv/bin/python bench/job_overhead.py [--jobs 10] [--bin target/release/janitord]
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/debug/janitord"))
    ap.add_argument("--idle-seconds", type=int, default=15)
    ap.add_argument("--idle-env", action="append", default=[],
                    help="KEY=VALUE for the idle daemon only (to see what each part costs)")
    args = ap.parse_args()

    subprocess.run(["bash", os.path.join(ROOT, "scripts/base-image.sh"), "janitor-test-base:latest"], check=True)
    fixture = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "testkit/fixture.py"), "--setup", "--instance", "i-0bench00000000001"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        ready = json.loads(fixture.stdout.readline())
        kw = dict(endpoint_url=ready["endpoint"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
        sqs = boto3.client("sqs", **kw)
        work = tempfile.mkdtemp(prefix="janitor-bench-")
        repo = os.path.join(work, "bench-repo")
        os.makedirs(repo)
        with open(os.path.join(repo, "Dockerfile"), "w") as f:
            f.write('FROM janitor-test-base:latest\nCMD ["sh", "-c", "echo ok"]\n')
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.email=b@x", "-c", "user.name=b", "commit", "-qm", "b"]):
            subprocess.run(cmd, cwd=repo, check=True)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for i in range(args.jobs):
            body = {"schema": 1, "job_id": f"bench-{i:03d}", "run_id": "20261122T000000Z-bench0",
                    "repo": {"organization": "local", "name": "bench-repo", "url": f"file://{repo}"},
                    "prompt": "bench", "gpu_required": False, "timeout": 120, "enqueued_at": now}
            sqs.send_message(QueueUrl=ready["queue_url"], MessageBody=json.dumps(body))
        env = {
            "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
            "AWS_ENDPOINT_URL": ready["endpoint"], "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": ready["imds"]["i-0bench00000000001"],
            "JANITOR_QUEUE_URL": ready["queue_url"], "JANITOR_BUCKET": ready["bucket"],
            "JANITOR_CACHE_DIR": os.path.join(work, "cache"), "JANITOR_ALLOW_LOCAL_REPOS": "true",
            "JANITOR_POLL_WAIT_SECONDS": "1", "JANITOR_LOG_FORMAT": "json",
            "JANITOR_JOURNALD_DAYS": "0", "JANITOR_DOCKER_PRUNE": "false", "JANITOR_MIN_FREE_BYTES": "1048576",
        }
        out = subprocess.run([args.bin, "--exit-when-idle"], env=env, capture_output=True, text=True, timeout=600)
        setup, report = [], []
        for line in out.stderr.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            fields = ev.get("fields", {})
            if fields.get("message") == "job finished":
                setup.append(fields["setup_ms"])
                report.append(fields["report_ms"])
        if len(setup) != args.jobs:
            print(out.stderr[-3000:], file=sys.stderr)
            sys.exit(f"expected {args.jobs} finished jobs, saw {len(setup)}")

        # The idle daemon with its health server (the default 127.0.0.1:9464) running.
        idle_env = dict(env)
        idle_env.update(kv.split("=", 1) for kv in args.idle_env)
        idle = subprocess.Popen([args.bin], env=idle_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(3)
        tick = os.sysconf("SC_CLK_TCK")

        def cpu_ticks():
            with open(f"/proc/{idle.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        start_ticks, start = cpu_ticks(), time.time()
        samples = []
        for _ in range(args.idle_seconds):
            time.sleep(1)
            with open(f"/proc/{idle.pid}/status") as f:
                rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            samples.append(rss)
        idle_cpu = (cpu_ticks() - start_ticks) / tick / (time.time() - start) * 100
        idle.terminate()
        idle.wait(timeout=30)
        print(json.dumps({
            "binary": args.bin,
            "jobs": args.jobs,
            "setup_ms_median": statistics.median(setup), "setup_ms_max": max(setup),
            "report_ms_median": statistics.median(report), "report_ms_max": max(report),
            "idle_rss_kib_median": statistics.median(samples), "idle_rss_kib_max": max(samples),
            "idle_cpu_percent_of_one_core": round(idle_cpu, 2),
        }, indent=2))
    finally:
        fixture.kill()


if __name__ == "__main__":
    main()
