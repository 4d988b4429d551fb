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
- What Terraform's AWS provider calls and moto lacks: Auto Scaling `StartInstanceRefresh`,
  `DescribeInstanceRefreshes` and `CancelInstanceRefresh` (each refresh recorded and reported
  `Successful`; GET /_fixture/instance-refreshes), and Budgets
  `DescribeSubscribersForNotification` (the subscribers moto stored with the budget) and
  tagging (`ListTagsForResource`, `TagResource`, `UntagResource`, and `CreateBudget`'s
  `ResourceTags`, which moto drops).
- Two answers moto gives differently from AWS, as AWS gives them (else Terraform plans a change
  after every apply): a scaling policy's `Enabled` (AWS: true; moto leaves it out) without an
  empty `PredictiveScalingConfiguration`, a queue's `RedrivePolicy` as compact JSON, and a
  launch template version's data without the template's own `launch-template` tags (which
  moto files there from CreateLaunchTemplate's top-level tag specifications); and an
  `UpdateAutoScalingGroup` that names no mixed-instances policy keeps the group's (moto's
  clears it).
- For Terraform run against it: GET /_fixture/ec2/defaults (moto's default VPC, two of its
  subnets and an AMI, for `vpc_id`, `subnet_ids` and `ami_id`) and
  GET /_fixture/ec2/user-data/{launch template id} (its latest version's user data, decoded,
  as EC2 stores it).
- With --setup, the resources Terraform would make: the jobs queue and its dead-letter queue
  (maxReceiveCount 3), the ledger bucket, the `/janitor-runner` log group, and the ASG
  `janitor-asg` (min 0, max 4, desired 0) with its terminating lifecycle hook `janitor-drain`.

Prints one JSON line with the endpoints and resource names when ready, then serves until killed.
"""

import argparse
import io
import json
import logging
import re
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

LIFECYCLE_ACTIONS = ("CompleteLifecycleAction", "RecordLifecycleActionHeartbeat")
REFRESH_ACTIONS = ("StartInstanceRefresh", "DescribeInstanceRefreshes", "CancelInstanceRefresh")
STATE_LOCK = threading.Lock()
RECORDED = []
REFRESHES = []
BUDGET_TAGS = {}
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


def autoscaling_xml(action, result=""):
    return (
        f'<{action}Response xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
        f"<{action}Result>{result}</{action}Result><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
        f"</ResponseMetadata></{action}Response>"
    ).encode()


def instance_refresh(action, params):
    """(status, body) of an instance-refresh call: moto has none. A started refresh is recorded
    and reported done at once (moto's instances are not real, so there is nothing to replace)."""
    group = params.get("AutoScalingGroupName", "")
    if action == "StartInstanceRefresh":
        rid = str(uuid.uuid4())
        with STATE_LOCK:
            REFRESHES.append({"group": group, "id": rid, "at": time.time(), "params": params})
        return "200 OK", autoscaling_xml(action, f"<InstanceRefreshId>{rid}</InstanceRefreshId>")
    if action == "DescribeInstanceRefreshes":
        with STATE_LOCK:
            mine = [r for r in REFRESHES if r["group"] == group]
        members = "".join(
            f"<member><InstanceRefreshId>{r['id']}</InstanceRefreshId><AutoScalingGroupName>{group}</AutoScalingGroupName>"
            f"<Status>Successful</Status><PercentageComplete>100</PercentageComplete></member>"
            for r in reversed(mine)
        )
        return "200 OK", autoscaling_xml(action, f"<InstanceRefreshes>{members}</InstanceRefreshes>")
    body = (
        "<ErrorResponse><Error><Type>Sender</Type><Code>ActiveInstanceRefreshNotFound</Code>"
        f"<Message>No in-progress instance refresh for {group}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    ).encode()
    return "400 Bad Request", body


def budget_subscribers(request):
    """DescribeSubscribersForNotification from the budget moto stored: its notification's
    subscribers."""
    from moto.budgets.models import budgets_backends

    backend = budgets_backends[request["AccountId"]]["aws"]
    budget = backend.budgets[request["AccountId"]].get(request["BudgetName"])
    wanted = request.get("Notification", {})
    for n in budget.notifications if budget else []:
        if all(str(n.details.get(k)) == str(v) for k, v in wanted.items()):
            return {"Subscribers": n.subscribers}
    return {"Subscribers": []}


def budget_tags(action, request):
    """Budgets' tagging, which moto lacks: the answer to return, or None to pass the request on
    to moto (`CreateBudget`, `DeleteBudget`, after their tags are noted)."""
    def arn(name):
        return f"arn:aws:budgets::{request.get('AccountId', '123456789012')}:budget/{name}"

    with STATE_LOCK:
        if action == "CreateBudget":
            tags = request.get("ResourceTags") or []
            BUDGET_TAGS[arn(request["Budget"]["BudgetName"])] = {t["Key"]: t["Value"] for t in tags}
            return None
        if action == "DeleteBudget":
            BUDGET_TAGS.pop(arn(request["BudgetName"]), None)
            return None
        tags = BUDGET_TAGS.setdefault(request.get("ResourceARN", ""), {})
        if action == "TagResource":
            tags.update({t["Key"]: t["Value"] for t in request.get("ResourceTags", [])})
            return {}
        if action == "UntagResource":
            for k in request.get("ResourceTagKeys", []):
                tags.pop(k, None)
            return {}
        return {"ResourceTags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}


BUDGET_TAG_ACTIONS = ("CreateBudget", "DeleteBudget", "TagResource", "UntagResource", "ListTagsForResource")


def as_aws_answers(action, body):
    """moto's answer to `action` rewritten where AWS answers otherwise (see the module's doc)."""
    if action == "DescribePolicies":
        text = body.decode().replace("<PredictiveScalingConfiguration/>", "")
        if "<Enabled>" not in text:
            text = text.replace("</PolicyType>", "</PolicyType><Enabled>true</Enabled>")
        return text.encode()
    if action == "DescribeLaunchTemplateVersions":
        return re.sub(
            rb"<item><resourceType>launch-template</resourceType><tagSet>.*?</tagSet></item>", b"", body
        )
    if action == "GetQueueAttributes" and body.startswith(b"{"):
        answer = json.loads(body)
        attrs = answer.get("Attributes", {})
        for key in ("RedrivePolicy", "RedriveAllowPolicy"):
            if key in attrs:
                attrs[key] = json.dumps(json.loads(attrs[key]), separators=(",", ":"))
        return json.dumps(answer).encode()
    return body


def region_of(environ):
    """The region a request was signed for (its credential scope)."""
    m = re.search(r"Credential=[^/]+/\d+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    return m.group(1) if m else "us-east-1"


def keeping_mixed_instances_policy(app, environ, start_response, params):
    """UpdateAutoScalingGroup as AWS does it: what the request does not name stays. moto sets the
    group's mixed-instances policy to the request's, None when it names none."""
    from moto.autoscaling.models import autoscaling_backends

    backend = autoscaling_backends["123456789012"][region_of(environ)]
    group = backend.autoscaling_groups.get(params.get("AutoScalingGroupName", ""))
    before = group.mixed_instances_policy if group else None
    answer = app(environ, start_response)
    if group is not None and before is not None and not any(k.startswith("MixedInstancesPolicy.") for k in params):
        group.mixed_instances_policy = before
    return answer


REWRITTEN_ACTIONS = ("DescribePolicies", "GetQueueAttributes", "DescribeLaunchTemplateVersions")


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
        if protocol == "query" and action in REFRESH_ACTIONS:
            status, body = instance_refresh(action, params)
            start_response(status, [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
            return [body]
        budgets = environ.get("HTTP_X_AMZ_TARGET", "").startswith("AWSBudgetServiceGateway.")
        if budgets and action in ("DescribeSubscribersForNotification",) + BUDGET_TAG_ACTIONS:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(raw)
            request = json.loads(raw or b"{}")
            if action == "DescribeSubscribersForNotification":
                answer = budget_subscribers(request)
            else:
                answer = budget_tags(action, request)
            if answer is not None:
                body = json.dumps(answer).encode()
                start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))])
                return [body]
        if action == "UpdateAutoScalingGroup":
            return keeping_mixed_instances_policy(self.app, environ, start_response, params)
        if action in REWRITTEN_ACTIONS:
            captured = {}

            def keep(status, headers, exc_info=None):
                captured["status"], captured["headers"] = status, headers

            body = as_aws_answers(action, b"".join(self.app(environ, keep)))
            headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
            start_response(captured["status"], headers + [("Content-Length", str(len(body)))])
            return [body]
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
                start_response("200 OK", [("Content-Type", "text/xml")])
                return [autoscaling_xml(action)]
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
        if method == "GET" and parts[:2] == ["_fixture", "ec2"]:
            import base64

            import boto3

            ec2 = boto3.client("ec2", endpoint_url=f"http://{environ['HTTP_HOST']}", region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
            if parts[2:] == ["defaults"]:
                vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
                subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
                ami = ec2.describe_images()["Images"][0]["ImageId"]
                out = {"vpc_id": vpc, "subnet_ids": sorted(x["SubnetId"] for x in subnets)[:2], "ami_id": ami}
                return reply("200 OK", json.dumps(out).encode())
            if len(parts) == 4 and parts[2] == "user-data":
                versions = ec2.describe_launch_template_versions(LaunchTemplateId=parts[3], Versions=["$Latest"])
                data = versions["LaunchTemplateVersions"][0]["LaunchTemplateData"].get("UserData", "")
                return reply("200 OK", base64.b64decode(data), "text/plain")
        if method == "GET" and parts == ["_fixture", "instance-refreshes"]:
            with STATE_LOCK:
                out = json.dumps(REFRESHES)
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
