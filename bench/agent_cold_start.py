#!/usr/bin/env python3
"""janitor's agent image: its size, and its cold start — from `docker run` to the first
Messages API request the agent makes — against a loopback stand-in that answers at once.

Builds the image first (scripts/agent-image.sh, offline from the cached wheel), then runs it
N times confined as janitord runs it (user 10001, read-only root, tmpfs /tmp, no
capabilities), with a small job.json. Prints medians as JSON.

Usage: python3 bench/agent_cold_start.py [--runs 5] [--tag janitor-agent:bench]
"""

import argparse
import http.server
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST = []


class Fake(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        FIRST.append(time.monotonic())
        msg = {"id": "m", "type": "message", "role": "assistant", "model": "claude-bench",
               "content": [], "stop_reason": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
        events = [
            ("message_start", {"type": "message_start", "message": msg}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "nothing to do"}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        body = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events).encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tag", default="janitor-agent:bench")
    args = ap.parse_args()
    subprocess.run(["bash", os.path.join(ROOT, "scripts/agent-image.sh"), args.tag], check=True)
    size = int(subprocess.check_output(["docker", "image", "inspect", "-f", "{{.Size}}", args.tag]).strip())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    firsts, totals = [], []
    for _ in range(args.runs):
        work = tempfile.mkdtemp()
        ws, io = os.path.join(work, "ws"), os.path.join(work, "io")
        os.makedirs(ws)
        os.makedirs(io)
        with open(os.path.join(ws, "handler.py"), "w") as f:
            f.write("print('hi')\n")
        with open(os.path.join(io, "job.json"), "w") as f:
            json.dump({"repo": {"organization": "o", "name": "w"}, "prompt": "check", "mode": "fix",
                       "attempt": 1, "max_attempts": 1, "max_turns": 3, "budget_usd": 1,
                       "validation": {"status": "failed", "reason": "run: exited 1"}}, f)
        subprocess.run(["chown", "-R", "10001:10001", work], check=True)
        FIRST.clear()
        t0 = time.monotonic()
        subprocess.run([
            "docker", "run", "--rm", "--network", "host", "--user", "10001:10001",
            "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=2g", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges:true",
            "-v", f"{ws}:/workspace", "-v", f"{io}:/janitor",
            "-e", "JANITOR_JOB=/janitor/job.json", "-e", "JANITOR_RESULT=/janitor/result.json",
            "-e", "JANITOR_WORKSPACE=/workspace", "-e", "HOME=/tmp",
            "-e", "ANTHROPIC_API_KEY=sk-bench", "-e", f"ANTHROPIC_BASE_URL={url}",
            args.tag,
        ], check=True, stdout=subprocess.DEVNULL)
        t1 = time.monotonic()
        with open(os.path.join(io, "result.json")) as f:
            assert json.load(f)["status"] == "failed"
        firsts.append(FIRST[0] - t0)
        totals.append(t1 - t0)
        shutil.rmtree(work)
    print(json.dumps({
        "image": args.tag,
        "image_bytes": size,
        "runs": args.runs,
        "start_to_first_request_s_median": round(statistics.median(firsts), 3),
        "start_to_first_request_s_max": round(max(firsts), 3),
        "whole_run_s_median": round(statistics.median(totals), 3),
    }, indent=2))


if __name__ == "__main__":
    main()
