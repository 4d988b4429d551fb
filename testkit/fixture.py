#!/usr/bin/env python3
"""AWS test fixture: moto's server on loopback, plus what moto lacks.

- ASG `CompleteLifecycleAction` and `RecordLifecycleActionHeartbeat`, recorded so tests can
  assert on them (GET /_fixture/lifecycle-actions).
- One IMDSv2 endpoint per instance id given with --instance (or added later with
  POST /_fixture/imds/{instance}, for instances moto's ASG launched), each on its own port; a test
  changes what it answers through PUT /_fixture/imds/{instance}/{field}, where field is
  `target-lifecycle-state`, `spot-instance-action` (empty body clears it),
  `rebalance-recommendation`, or `fail-for` (seconds of HTTP 500 answers).
- Faults on cue: POST /_fixture/faults with {"match": ACTION, "status": 503, "code": "...",
  "count": N} makes the next N requests for ACTION fail with that status and error code, in the
  protocol the service speaks (JSON `__type`, query-XML `<ErrorResponse>`, S3's `<Error>`).
  ACTION is an API name (`PutLogEvents`, `ReceiveMessage`, `TerminateInstanceInAutoScalingGroup`)
  or `S3:{METHOD}` for S3. With "delay": SECONDS and no status, the request is served but its
  answer held back that long; for ReceiveMessage only answers that carry a message count (a
  message received while the daemon is told to stop).
  GET /_fixture/faults lists the faults with how often each fired.
- With --setup, the resources Terraform would make: the jobs queue and its dead-letter queue
  (maxReceiveCount 3), the ledger bucket, the `/janitor-runner` log group, and the ASG
  `janitor-asg` (min 0, max 4, desired 0) with its terminating lifecycle hook `janitor-drain`.

Prints one JSON line with the endpoints and resource names when ready, then serves until killed.
"""

import argparse
import io
import json
import logging
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

LIFECYCLE_ACTIONS = ("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat")
STATE_LOCK = threading.Lock()
RECORDED = []
INSTANCES = {}
FAULTS = []


def action_of(environ, params):
    """The API action of a request: X-Amz-Target's operation, the query Action, or S3:{METHOD}."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return target.rsplit(".", 1)[-1], "json"
    if params.get("Action"):
        return params["Action"], "query"
    return "S3:" + environ.get("REQUEST_METHOD", ""), "s3"


def take_fault(action, delays):
    """The next fault for `action`: failures (`delays` False) or delays (`delays` True)."""
    with STATE_LOCK:
        for f in FAULTS:
            if f["match"] == action and f["left"] > 0 and (f["status"] == 0) == delays:
                f["left"] -= 1
                f["fired"] += 1
                return dict(f)
    return None


def fault_response(fault, protocol, start_response):
    status = f'{fault["status"]} Fixture Fault'
    code, message = fault["code"], "fixture: failing on purpose"
    if protocol == "json":
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)]
    elif protocol == "query":
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
            f"</Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml")]
    else:
        body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
        headers = [("Content-Type", "application/xml")]
    start_response(status, headers + [("Content-Length", str(len(body)))])
    return [body]


class Instance:
    def __init__(self, instance_id, instance_type, az, lifecycle):
        self.facts = {
            "instance-id": instance_id,
            "instance-type": instance_type,
            "placement/availability-zone": az,
            "placement/region": az[:-1],
            "instance-life-cycle": lifecycle,
            "autoscaling/target-lifecycle-state": "InService",
        }
        self.optional = {}  # spot/instance-action, events/recommendations/rebalance
        self.fail_until = 0.0
        self.tokens = set()
        self.requests = 0


class Fixture:
    """WSGI middleware in front of moto."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_fixture/"):
            return self.control(environ, start_response, path)
        params = {}
        if environ.get("REQUEST_METHOD") == "POST" and "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
            params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        action, protocol = action_of(environ, params)
        fault = take_fault(action, delays=False)
        if fault:
            return fault_response(fault, protocol, start_response)
        # A long poll may be waiting inside moto when a delay is set: receives are always looked at.
        if action == "ReceiveMessage" or any(f["match"] == action and f["left"] > 0 and f["status"] == 0 for f in FAULTS):
            captured = {}

            def capture(status, headers, exc_info=None):
                captured["status"], captured["headers"] = status, headers

            body = b"".join(self.app(environ, capture))
            if action != "ReceiveMessage" or b"ReceiptHandle" in body:
                delay = take_fault(action, delays=True)
                if delay:
                    time.sleep(delay["delay"])
            start_response(captured["status"], captured["headers"])
            return [body]
        if params:
            if action in LIFECYCLE_ACTIONS:
                params["recorded_at"] = time.time()
                with STATE_LOCK:
                    RECORDED.append(params)
                xml = (
                    f'<{action}Response xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
                    f"<{action}Result/><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
                    f"</ResponseMetadata></{action}Response>"
                )
                start_response("200 OK", [("Content-Type", "text/xml")])
                return [xml.encode()]
        return self.app(environ, start_response)

    def control(self, environ, start_response, path):
        def reply(status, body=b"", ctype="application/json"):
            start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
            return [body]

        method = environ.get("REQUEST_METHOD")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length).decode() if length else ""
        parts = path.strip("/").split("/")
        if parts == ["_fixture", "faults"]:
            if method == "POST":
                spec = json.loads(body)
                fault = {"match": spec["match"], "status": int(spec.get("status", 0 if "delay" in spec else 503)),
                         "delay": float(spec.get("delay", 0)),
                         "code": spec.get("code", "ServiceUnavailable"), "left": int(spec.get("count", 1)),
                         "fired": 0}
                with STATE_LOCK:
                    FAULTS.append(fault)
                return reply("204 No Content")
            with STATE_LOCK:
                out = json.dumps(FAULTS)
            return reply("200 OK", out.encode())
        if method == "GET" and parts == ["_fixture", "lifecycle-actions"]:
            with STATE_LOCK:
                out = json.dumps(RECORDED)
            return reply("200 OK", out.encode())
        if method == "PUT" and len(parts) == 4 and parts[1] == "imds" and parts[2] in INSTANCES:
            inst, field = INSTANCES[parts[2]], parts[3]
            with STATE_LOCK:
                if field == "target-lifecycle-state":
                    inst.facts["autoscaling/target-lifecycle-state"] = body
                elif field == "spot-instance-action":
                    key = "spot/instance-action"
                    if body:
                        inst.optional[key] = body
                    else:
                        inst.optional.pop(key, None)
                elif field == "rebalance-recommendation":
                    inst.optional["events/recommendations/rebalance"] = body
                elif field == "fail-for":
                    inst.fail_until = time.time() + float(body)
                else:
                    return reply("404 Not Found", b"unknown field", "text/plain")
            return reply("204 No Content")
        if method == "POST" and len(parts) == 3 and parts[1] == "imds":
            # An IMDS for an instance that exists elsewhere (one moto's ASG launched).
            url = start_imds(parts[2], body or "g5.xlarge:us-east-1a:on-demand")
            return reply("200 OK", json.dumps({"url": url}).encode())
        if method == "GET" and len(parts) == 4 and parts[1] == "imds" and parts[3] == "requests" and parts[2] in INSTANCES:
            return reply("200 OK", json.dumps(INSTANCES[parts[2]].requests).encode())
        return reply("404 Not Found", b"unknown fixture path", "text/plain")


def imds_handler(inst):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, text=""):
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def failing(self):
            with STATE_LOCK:
                inst.requests += 1
                return time.time() < inst.fail_until

        def do_PUT(self):
            if self.failing():
                return self.reply(500, "fixture: failing on purpose")
            if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return self.reply(400, "bad token request")
            token = uuid.uuid4().hex
            with STATE_LOCK:
                inst.tokens.add(token)
            self.send_response(200)
            self.send_header("X-aws-ec2-metadata-token-ttl-seconds", self.headers["X-aws-ec2-metadata-token-ttl-seconds"])
            self.send_header("Content-Length", str(len(token)))
            self.end_headers()
            self.wfile.write(token.encode())

        def do_GET(self):
            if self.failing():
                return self.reply(500, "fixture: failing on purpose")
            with STATE_LOCK:
                if self.headers.get("X-aws-ec2-metadata-token") not in inst.tokens:
                    return self.reply(401, "IMDSv2 token required")
                prefix = "/latest/meta-data/"
                if not self.path.startswith(prefix):
                    return self.reply(404)
                key = self.path[len(prefix):]
                value = inst.facts.get(key, inst.optional.get(key))
            if value is None:
                return self.reply(404, "not found")
            return self.reply(200, value)

    return Handler


def start_imds(instance_id, spec):
    """Starts an IMDSv2 server for one instance; spec is `type:az:lifecycle`, each optional."""
    fields = (spec or "").split(":") + [None] * 3
    inst = Instance(instance_id, fields[0] or "g5.xlarge", fields[1] or "us-east-1a", fields[2] or "on-demand")
    INSTANCES[instance_id] = inst
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), imds_handler(inst))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_port}"


def setup(endpoint):
    import boto3

    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    sqs = boto3.client("sqs", **kw)
    dlq_url = sqs.create_queue(QueueName="janitor-jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName="janitor-jobs",
        Attributes={
            "VisibilityTimeout": "30",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
        },
    )["QueueUrl"]
    boto3.client("s3", **kw).create_bucket(Bucket="janitor-test")
    boto3.client("logs", **kw).create_log_group(logGroupName="/janitor-runner")
    ec2 = boto3.client("ec2", **kw)
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.create_launch_template(LaunchTemplateName="janitor-lt", LaunchTemplateData={"ImageId": ami, "InstanceType": "g5.xlarge"})
    asg = boto3.client("autoscaling", **kw)
    asg.create_auto_scaling_group(
        AutoScalingGroupName="janitor-asg",
        LaunchTemplate={"LaunchTemplateName": "janitor-lt", "Version": "$Latest"},
        MinSize=0, MaxSize=4, DesiredCapacity=0, AvailabilityZones=["us-east-1a"],
    )
    asg.put_lifecycle_hook(
        LifecycleHookName="janitor-drain", AutoScalingGroupName="janitor-asg",
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", HeartbeatTimeout=300, DefaultResult="CONTINUE",
    )
    return {"queue_url": queue_url, "dlq_url": dlq_url, "bucket": "janitor-test",
            "log_group": "/janitor-runner", "asg_name": "janitor-asg"}


def setup_pool(endpoint, spec):
    """A pool as Terraform makes one: its queue with a dead-letter queue, launch template and
    group with the drain hook. `spec` is name:instance_type:gpu_memory_gb[:max_instances].
    Returns its entry of Terraform's `pools` output."""
    import boto3

    name, itype, gpu, *rest = spec.split(":")
    most = int(rest[0]) if rest else 4
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    sqs = boto3.client("sqs", **kw)
    dlq_url = sqs.create_queue(QueueName=f"janitor-{name}-jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"janitor-{name}-jobs",
        Attributes={
            "VisibilityTimeout": "30",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"}),
        },
    )["QueueUrl"]
    ec2 = boto3.client("ec2", **kw)
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.create_launch_template(LaunchTemplateName=f"janitor-{name}", LaunchTemplateData={"ImageId": ami, "InstanceType": itype})
    asg = boto3.client("autoscaling", **kw)
    asg.create_auto_scaling_group(
        AutoScalingGroupName=f"janitor-{name}",
        LaunchTemplate={"LaunchTemplateName": f"janitor-{name}", "Version": "$Latest"},
        MinSize=0, MaxSize=most, DesiredCapacity=0, AvailabilityZones=["us-east-1a"],
    )
    asg.put_lifecycle_hook(
        LifecycleHookName="janitor-drain", AutoScalingGroupName=f"janitor-{name}",
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING", HeartbeatTimeout=300, DefaultResult="CONTINUE",
    )
    return name, {"queue_url": queue_url, "dlq_url": dlq_url, "asg_name": f"janitor-{name}",
                  "instance_type": itype, "gpu_memory_gb": int(gpu), "max_instances": most}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instance", action="append", default=[], help="id[:type[:az[:lifecycle]]]")
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--pool", action="append", default=[], help="name:instance_type:gpu_memory_gb[:max_instances]")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    server = make_server("127.0.0.1", 0, Fixture(DomainDispatcherApplication(create_backend_app)), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"

    imds = {}
    for spec in args.instance:
        iid, _, rest = spec.partition(":")
        imds[iid] = start_imds(iid, rest)

    ready = {"endpoint": endpoint, "imds": imds}
    if args.setup:
        ready.update(setup(endpoint))
    ready["pools"] = dict(setup_pool(endpoint, p) for p in args.pool)
    print(json.dumps(ready), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
