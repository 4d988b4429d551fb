#!/usr/bin/env python3
"""Times `janitorctl results --repo ORG/NAME --limit 20` and `status` against moto with a
large ledger: N history entries for one repository (in the layout janitord writes) plus a run.

Usage: .venv/bin/python bench/queries.py [--entries 10000] [--bin target/release/janitorctl]
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def inverted(run_id):
    return "".join(str(9 - int(c)) if c.isdigit() else c for c in run_id[:16])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=10000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/janitorctl"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    fixture = subprocess.Popen([sys.executable, os.path.join(ROOT, "testkit/fixture.py"), "--setup"],
                               stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(fixture.stdout.readline())
        kw = dict(endpoint_url=ready["endpoint"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
        s3 = boto3.client("s3", **kw)
        base = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        report = json.load(open(os.path.join(ROOT, "examples/report.json")))
        t = time.time()
        for i in range(args.entries):
            run_id = (base + datetime.timedelta(minutes=i)).strftime("%Y%m%dT%H%M%SZ") + "-bench0"
            job_id = f"worker-basic-{i:08d}"
            report.update(run_id=run_id, job_id=job_id)
            key = f"janitor-reports/repos/runpod-workers/worker-basic/{inverted(run_id)}-{run_id}-{job_id}.json"
            s3.put_object(Bucket=ready["bucket"], Key=key, Body=json.dumps(report).encode())
        print(f"wrote {args.entries} history entries in {time.time() - t:.0f} s", file=sys.stderr)
        env = dict(os.environ, AWS_ENDPOINT_URL=ready["endpoint"], AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1",
                   JANITOR_BUCKET=ready["bucket"], JANITOR_QUEUE_URL=ready["queue_url"],
                   JANITOR_ASG_NAME=ready["asg_name"])
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = subprocess.run([args.bin, "results", "--repo", "runpod-workers/worker-basic",
                                  "--limit", "20", "--json"], env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t)
            if out.returncode != 0:
                sys.exit(out.stderr)
            got = json.loads(out.stdout)
        newest = got["reports"][0]["job_id"] if isinstance(got, dict) else got[0]["job_id"]
        print(json.dumps({"entries": args.entries, "results_limit_20_median_s": round(statistics.median(times), 3),
                          "results_limit_20_max_s": round(max(times), 3), "newest": newest}, indent=2))
    finally:
        fixture.kill()


if __name__ == "__main__":
    main()
