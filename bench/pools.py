#!/usr/bin/env python3
"""The fleet's shape at organisation scale, on this machine: N trivial jobs over three pools
and D daemons against moto, through the real janitorctl and janitord.

`janitorctl run` routes the jobs to the pools' queues (cpu, gpu-24, gpu-48 as the fixture makes
them, each job's `pool:` or `gpu_required: false` deciding), raises each pool's group, follows
the run and waits for the groups to stop; each pool's daemons read only their pool's queue.
Each job sleeps --sleep seconds in its container. Reports:
  wall_s          : the manifest's creation (janitorctl's first enqueue) -> the last report
  ideal_s         : max over pools of ceil(jobs / daemons) x sleep (no overhead at all)
  added_s         : wall - ideal, the control plane's and the pipeline's added time
  first_start_s   : the manifest's creation -> the first job started on a daemon
  job_s_median    : each job's duration in its report (clone, build, run, report)
  reports         : reports stored (must equal the jobs, one each)
  peak RSS (VmHWM) of janitorctl and of each daemon, in MiB
No GPU is used: the GPU pools' jobs run with `gpu_required: false`.

Usage: .venv/bin/python bench/pools.py [--jobs 45] [--daemons 20] [--sleep 3]
       [--ctl target/debug/janitorctl] [--janitord target/debug/janitord]
"""

import argparse
import collections
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOLS = [("cpu", "c7i.xlarge", 0), ("gpu-24", "g5.xlarge", 24), ("gpu-48", "g6e.xlarge", 48)]


def peak_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


class Peaks(threading.Thread):
    """Samples each process's VmHWM (its peak resident memory) until it exits."""

    def __init__(self):
        super().__init__(daemon=True)
        self.procs, self.peak, self.stop = {}, collections.defaultdict(int), False

    def watch(self, name, proc):
        self.procs[name] = proc

    def run(self):
        while not self.stop:
            for name, p in list(self.procs.items()):
                kib = peak_kib(p.pid)
                if kib:
                    self.peak[name] = max(self.peak[name], kib)
            time.sleep(0.1)


def git_repo(path, dockerfile):
    os.makedirs(path)
    with open(os.path.join(path, "Dockerfile"), "w") as f:
        f.write(dockerfile)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=b@x", "-c", "user.name=b", "commit", "-qm", "b"]):
        subprocess.run(cmd, cwd=path, check=True)


def split(total, parts):
    """`total` as evenly as possible over `parts`, larger first: 20 over 3 -> 7, 7, 6."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=45)
    ap.add_argument("--daemons", type=int, default=20)
    ap.add_argument("--sleep", type=int, default=3)
    ap.add_argument("--ctl", default=os.path.join(ROOT, "target/debug/janitorctl"))
    ap.add_argument("--janitord", default=os.path.join(ROOT, "target/debug/janitord"))
    args = ap.parse_args()

    subprocess.run(["bash", os.path.join(ROOT, "scripts/base-image.sh"), "janitor-test-base:latest"], check=True,
                   stdout=subprocess.DEVNULL)
    daemons = split(args.daemons, len(POOLS))
    jobs = split(args.jobs, len(POOLS))
    instances = [f"i-0b{p:02d}{d:013x}" for p in range(len(POOLS)) for d in range(daemons[p])]
    cmd = [sys.executable, os.path.join(ROOT, "testkit/fixture.py"), "--setup"]
    for (name, itype, gpu), most in zip(POOLS, daemons):
        cmd += ["--pool", f"{name}:{itype}:{gpu}:{most}"]
    for i in instances:
        cmd += ["--instance", i]
    fixture = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    procs = []
    try:
        ready = json.loads(fixture.stdout.readline())
        kw = dict(endpoint_url=ready["endpoint"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
        s3, asg = boto3.client("s3", **kw), boto3.client("autoscaling", **kw)
        work = tempfile.mkdtemp(prefix="janitor-pools-")
        dockerfile = f'FROM janitor-test-base:latest\nCMD ["sh", "-c", "sleep {args.sleep}; echo ok"]\n'
        lines = ["repositories:"]
        for (name, _, _), n in zip(POOLS, jobs):
            for j in range(n):
                repo = f"sim-{name}-{j:02d}"
                git_repo(os.path.join(work, repo), dockerfile)
                pool = "" if name == "cpu" else f", pool: {name}"
                lines.append(f"  - {{name: {repo}, organization: local, url: ./{repo}, "
                             f"gpu_required: false, timeout: 5m{pool}}}")
        lines.append(f"max_concurrent_instances: {max(daemons)}")
        config = os.path.join(work, "pools.yaml")
        with open(config, "w") as f:
            f.write("\n".join(lines) + "\n")

        base = {
            "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
            "AWS_ENDPOINT_URL": ready["endpoint"], "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
            "JANITOR_BUCKET": ready["bucket"],
        }
        peaks = Peaks()
        peaks.start()
        ctl_env = dict(base, JANITOR_POOLS=json.dumps(ready["pools"]),
                       JANITOR_QUEUE_URL=ready["queue_url"], JANITOR_ASG_NAME=ready["asg_name"])
        ctl = subprocess.Popen([args.ctl, "run", config, "--yes", "--allow-local-repos",
                                "--poll-seconds", "1", "--wait-minutes", "2"],
                               env=ctl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(ctl)
        peaks.watch("janitorctl", ctl)
        # The daemons start once the jobs are on their queues (as instances boot after the
        # scale-up); each reads only its pool's queue, as its launch template says.
        run_id = None
        for line in ctl.stderr:
            if line.startswith("Run ") and "enqueued" in line:
                run_id = line.split()[1].rstrip(":")
                break
        if not run_id:
            sys.exit("janitorctl enqueued nothing:\n" + ctl.stderr.read())
        i = 0
        for (name, _, _), n in zip(POOLS, daemons):
            for _ in range(n):
                inst = instances[i]
                i += 1
                env = dict(base, **{
                    "AWS_EC2_METADATA_SERVICE_ENDPOINT": ready["imds"][inst],
                    "JANITOR_QUEUE_URL": ready["pools"][name]["queue_url"],
                    "JANITOR_CACHE_DIR": os.path.join(work, "cache", inst),
                    "JANITOR_ALLOW_LOCAL_REPOS": "true", "JANITOR_POLL_WAIT_SECONDS": "1",
                    "JANITOR_METRICS_ADDR": "off", "JANITOR_JOURNALD_DAYS": "0",
                    "JANITOR_DOCKER_PRUNE": "false", "JANITOR_MIN_FREE_BYTES": "1048576",
                    "JANITOR_MIN_FREE_INODES": "100", "JANITOR_CACHE_BUDGET_BYTES": "1099511627776",
                    "JANITOR_STOP_GRACE_SECONDS": "2",
                })
                d = subprocess.Popen([args.janitord, "--exit-when-idle"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                procs.append(d)
                peaks.watch(f"janitord {name} {inst}", d)
        prefix = f"janitor-reports/runs/{run_id}/"
        deadline = time.time() + 600
        while True:
            keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=ready["bucket"], Prefix=prefix) for o in page.get("Contents", [])]
            reports = [k for k in keys if k.endswith("/report.json")]
            if len(reports) >= args.jobs or time.time() > deadline:
                break
            time.sleep(0.5)
        # The daemons scale their groups in on real instances; here the groups go to zero.
        for name, _, _ in POOLS:
            asg.set_desired_capacity(AutoScalingGroupName=ready["pools"][name]["asg_name"], DesiredCapacity=0)
        out, err = ctl.communicate(timeout=300)
        for d in procs[1:]:
            d.wait(timeout=300)
        peaks.stop = True
        peaks.join()

        manifest = json.loads(s3.get_object(Bucket=ready["bucket"], Key=prefix + "manifest.json")["Body"].read())
        created = datetime.datetime.fromisoformat(manifest["created_at"].replace("Z", "+00:00"))
        finished, took, statuses, by_pool = [], [], collections.Counter(), collections.Counter()
        pool_of = {j["job_id"]: j["pool"] for j in manifest["jobs"]}
        for k in reports:
            r = json.loads(s3.get_object(Bucket=ready["bucket"], Key=k)["Body"].read())
            finished.append(datetime.datetime.fromisoformat(r["timings"]["finished_at"].replace("Z", "+00:00")))
            took.append(r["timings"]["duration_seconds"])
            statuses[r["status"]] += 1
            by_pool[pool_of.get(r["job_id"], "?")] += 1
        starts = []
        for k in keys:
            if "/started-" in k:
                st = json.loads(s3.get_object(Bucket=ready["bucket"], Key=k)["Body"].read())
                starts.append(datetime.datetime.fromisoformat(st["started_at"].replace("Z", "+00:00")))
        wall = (max(finished) - created).total_seconds()
        ideal = max(math.ceil(n / d) * args.sleep for n, d in zip(jobs, daemons))
        daemon_peaks = [v for k, v in peaks.peak.items() if k.startswith("janitord")]
        print(json.dumps({
            "jobs": args.jobs, "daemons": args.daemons, "sleep_s": args.sleep,
            "pools": {name: {"jobs": n, "daemons": d, "reports": by_pool[name]}
                      for (name, _, _), n, d in zip(POOLS, jobs, daemons)},
            "reports": len(reports), "statuses": dict(statuses),
            "janitorctl_exit": ctl.returncode,
            "wall_s": round(wall, 2), "ideal_s": ideal, "added_s": round(wall - ideal, 2),
            "first_start_s": round((min(starts) - created).total_seconds(), 2),
            "job_s_median": round(statistics.median(took), 2), "job_s_max": round(max(took), 2),
            "janitorctl_peak_rss_mib": round(peaks.peak["janitorctl"] / 1024, 1),
            "janitord_peak_rss_mib_median": round(statistics.median(daemon_peaks) / 1024, 1),
            "janitord_peak_rss_mib_max": round(max(daemon_peaks) / 1024, 1),
        }, indent=2))
        if len(reports) != args.jobs or ctl.returncode != 0:
            print(out[-3000:], err[-3000:], file=sys.stderr)
            sys.exit(1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        fixture.kill()


if __name__ == "__main__":
    main()
