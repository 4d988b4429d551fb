#!/usr/bin/env python3
"""A job printing a million lines, against the same image run bare with its output discarded.

Starts the moto fixture, runs the real janitord on one job whose CMD prints 1,000,000 lines
(about 60 MB) as fast as awk can, and the same image bare (`docker run --rm IMAGE` with
stdout to /dev/null) before and after it. Prints the run step's duration against the bare
run's median, every count of the report's `output`, and two rates into moto: the events
shipped over the shipper's busy time (`ship_ms`: first line read back to last batch
answered), and, more severely, over the time from the container's start to the report
stored (the run step plus janitord's `report_ms`: catch-up, archive upload, report).

Usage: .venv/bin/python bench/million_lines.py [--bin target/release/janitord] [--bare 3]
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
SCRIPT = ("awk 'BEGIN { for (i = 1; i <= 1000000; i++) "
          "printf \"line %d ..................................................\\n\", i }'")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/janitord"))
    ap.add_argument("--bare", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["bash", os.path.join(ROOT, "scripts/base-image.sh"), "janitor-test-base:latest"], check=True)
    work = tempfile.mkdtemp(prefix="janitor-bench-million-")
    repo = os.path.join(work, "bench-million")
    os.makedirs(repo)
    with open(os.path.join(repo, "Dockerfile"), "w") as f:
        f.write("FROM janitor-test-base:latest\nCMD [\"sh\", \"-c\", %s]\n" % json.dumps(SCRIPT))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=b@x", "-c", "user.name=b", "commit", "-qm", "b"]):
        subprocess.run(cmd, cwd=repo, check=True)

    def bare():
        t = time.monotonic()
        subprocess.run(["docker", "run", "--rm", "janitor-test-base:latest", "sh", "-c", SCRIPT],
                       stdout=subprocess.DEVNULL, check=True)
        return time.monotonic() - t

    bare_s = [bare() for _ in range(args.bare)]

    fixture = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "testkit/fixture.py"), "--setup", "--instance", "i-0bench00000000002"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        ready = json.loads(fixture.stdout.readline())
        kw = dict(endpoint_url=ready["endpoint"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"schema": 1, "job_id": "million-001", "run_id": "20261201T000000Z-millon",
                "repo": {"organization": "local", "name": "bench-million", "url": f"file://{repo}"},
                "prompt": "bench", "gpu_required": False, "timeout": 600, "enqueued_at": now}
        boto3.client("sqs", **kw).send_message(QueueUrl=ready["queue_url"], MessageBody=json.dumps(body))
        env = {
            "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
            "AWS_ENDPOINT_URL": ready["endpoint"], "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": ready["imds"]["i-0bench00000000002"],
            "JANITOR_QUEUE_URL": ready["queue_url"], "JANITOR_BUCKET": ready["bucket"],
            "JANITOR_CACHE_DIR": os.path.join(work, "cache"), "JANITOR_ALLOW_LOCAL_REPOS": "true",
            "JANITOR_POLL_WAIT_SECONDS": "1", "JANITOR_LOG_FORMAT": "json",
            "JANITOR_JOURNALD_DAYS": "0", "JANITOR_DOCKER_PRUNE": "false", "JANITOR_MIN_FREE_BYTES": "1048576",
        }
        out = subprocess.run([args.bin, "--exit-when-idle"], env=env, capture_output=True, text=True, timeout=900)
        finished = [json.loads(l)["fields"] for l in out.stderr.splitlines()
                    if l.startswith("{") and json.loads(l).get("fields", {}).get("message") == "job finished"]
        if len(finished) != 1:
            print(out.stderr[-3000:], file=sys.stderr)
            sys.exit("the job did not finish")
        s3 = boto3.client("s3", **kw)
        key = "janitor-reports/runs/20261201T000000Z-millon/jobs/million-001/report.json"
        report = json.loads(s3.get_object(Bucket=ready["bucket"], Key=key)["Body"].read())
    finally:
        fixture.kill()
    bare_s += [bare() for _ in range(args.bare)]
    run = next(s for s in report["steps"] if s["name"] == "run")
    report_s = finished[0]["report_ms"] / 1000
    bare_median = statistics.median(bare_s)
    shipped = run["output"]["shipped_events"]
    print(json.dumps({
        "binary": args.bin,
        "bare_runs_s": [round(b, 2) for b in bare_s],
        "bare_median_s": round(bare_median, 2),
        "run_step_s": run["duration_seconds"],
        "run_step_over_bare": round(run["duration_seconds"] / bare_median, 2),
        "after_the_container_s": round(report_s, 2),
        "container_start_to_report_over_bare": round((run["duration_seconds"] + report_s) / bare_median, 2),
        "run_output": run["output"],
        "job_output": report["output"],
        "shipping_s": finished[0]["ship_ms"] / 1000,
        "events_per_second_into_moto": round(report["output"]["shipped_events"] / (finished[0]["ship_ms"] / 1000)),
        "events_per_second_container_start_to_report": round(shipped / (run["duration_seconds"] + report_s)),
    }, indent=2))


if __name__ == "__main__":
    main()
