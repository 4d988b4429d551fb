"""Offline checks of the infrastructure code: what can be verified without Terraform, Packer or
an AWS account. GitHub Actions also runs the real `terraform validate`, tflint and
`packer validate`. Run with `make infra-check` (part of `make test`)."""

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile

import hcl2
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TF_DIR = os.path.join(ROOT, "infra", "terraform")

# Exactly what janitord calls (README.md, "Deploying to AWS"). Changing one means changing both.
JANITORD_ACTIONS = {
    "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes",
    "s3:PutObject", "s3:GetObject",
    "logs:CreateLogStream", "logs:PutLogEvents",
    "ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
    "autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat",
    "autoscaling:SetInstanceProtection", "autoscaling:SetInstanceHealth",
    "autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup",
    "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLifecycleHooks",
    "secretsmanager:GetSecretValue", "ssm:GetParameter", "kms:Decrypt",
    "ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
}
# Actions without resource-level permissions: the only ones allowed a "*" resource.
STAR_ALLOWED = {
    "ecr:GetAuthorizationToken",
    "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLifecycleHooks",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
}


def hcl_files():
    files = glob.glob(os.path.join(ROOT, "infra", "**", "*.tf"), recursive=True)
    files += glob.glob(os.path.join(ROOT, "infra", "env", "*.tfvars"))
    files += glob.glob(os.path.join(ROOT, "infra", "env", "*.hcl"))
    files += glob.glob(os.path.join(ROOT, "packer", "*.pkr.hcl"))
    return sorted(files)


def terraform():
    """Every resource and data block of infra/terraform, as {(type, name): body}."""
    out = {}
    for path in glob.glob(os.path.join(TF_DIR, "*.tf")):
        with open(path) as f:
            doc = hcl2.load(f)
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        out[(kind, rtype, name)] = body
    return out


def first(v):
    """python-hcl2 wraps attribute values (and single blocks) in one-element lists."""
    return v[0] if isinstance(v, list) and len(v) == 1 else v


@pytest.mark.parametrize("path", hcl_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_hcl_file_parses(path):
    with open(path) as f:
        hcl2.load(f)


def test_there_is_infrastructure_to_check():
    names = {os.path.relpath(p, ROOT) for p in hcl_files()}
    for must in ("infra/terraform/main.tf", "infra/terraform/iam.tf", "infra/terraform/compute.tf",
                 "infra/env/dev.tfvars", "infra/env/prod.tfvars", "packer/gpu-ami.pkr.hcl"):
        assert must in names


def test_instance_role_allows_exactly_the_documented_actions():
    doc = terraform()[("data", "aws_iam_policy_document", "janitord")]
    actions, stars = set(), set()
    for st in doc["statement"]:
        acts = set(first(st["actions"]))
        actions |= acts
        if "*" in first(st["resources"]):
            stars |= acts
        assert all("*" not in a for a in acts), f"wildcard action in {first(st.get('sid'))}: {acts}"
    assert actions == JANITORD_ACTIONS
    assert stars <= STAR_ALLOWED, f'"*" resource for {stars - STAR_ALLOWED}'
    # Every "*" statement says why, in a comment.
    text = open(os.path.join(TF_DIR, "iam.tf")).read()
    assert text.count('resources = ["*"]') == text.count('# AWS requires "*"') == 3


def test_job_secrets_are_the_janitor_names_only():
    doc = terraform()[("data", "aws_iam_policy_document", "janitord")]
    by_sid = {first(st.get("sid")): st for st in doc["statement"]}
    assert str(by_sid["JobSecrets"]["resources"]).count(":secret:janitor/*") == 1
    assert str(by_sid["JobParameters"]["resources"]).count(":parameter/janitor/*") == 1
    assert "kms:ViaService" in str(by_sid["JobParametersDecrypt"]["condition"])


def test_session_manager_without_reading_every_parameter():
    # No managed policy (AmazonSSMManagedInstanceCore grants ssm:GetParameter(s) on "*"):
    # Session Manager's own actions, and parameters only under janitor/.
    tf = terraform()
    assert not [k for k in tf if k[:2] == ("resource", "aws_iam_role_policy_attachment")]
    doc = tf[("data", "aws_iam_policy_document", "janitord")]
    for st in doc["statement"]:
        acts = set(first(st["actions"]))
        if acts & {"ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"}:
            resources = first(st["resources"])
            assert all(r.endswith(":parameter/janitor/*") for r in resources), st
    text = "".join(open(p).read() for p in glob.glob(os.path.join(TF_DIR, "*.tf")))
    assert '"ssm:*"' not in text and "ManagedInstanceCore\"" not in text


def test_launch_template_requires_imdsv2_and_encrypts_every_volume():
    lt = terraform()[("resource", "aws_launch_template", "pool")]
    md = first(lt["metadata_options"])
    assert first(md["http_tokens"]) == "required"
    assert first(md["http_put_response_hop_limit"]) == 1
    devices = lt["block_device_mappings"]
    assert len(devices) == 2
    for d in devices:
        ebs = first(d["ebs"])
        assert first(ebs["encrypted"]) is True, d
        assert first(ebs["volume_type"]) == "gp3", d
    sizes = [first(first(d["ebs"])["volume_size"]) for d in devices]
    assert "${each.value.cache_volume_gb}" in sizes
    ni = first(lt["network_interfaces"])
    assert first(ni["associate_public_ip_address"]) == "${var.associate_public_ip}"


def test_no_security_group_has_ingress():
    tf = terraform()
    groups = [b for (k, t, _), b in tf.items() if t == "aws_security_group"]
    assert groups
    for g in groups:
        assert "ingress" not in g or g["ingress"] in ([], None)
    assert not [t for (_, t, _) in tf if t in ("aws_security_group_rule", "aws_vpc_security_group_ingress_rule")]


def test_the_group_scales_from_zero_and_drains_on_its_hook():
    asg = terraform()[("resource", "aws_autoscaling_group", "pool")]
    assert first(asg["for_each"]) == "${local.pools}"
    assert first(asg["min_size"]) == 0
    assert first(asg["max_size"]) == "${each.value.max_instances}"
    assert "desired_capacity" in str(first(asg["lifecycle"])["ignore_changes"])
    hook = first(asg["initial_lifecycle_hook"])
    assert first(hook["lifecycle_transition"]) == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert first(hook["name"]) == "janitor-drain"


def test_checkov_passes_and_every_skip_says_why():
    for path in glob.glob(os.path.join(TF_DIR, "*.tf")):
        for line in open(path):
            if "checkov:skip=" in line:
                m = re.search(r"checkov:skip=(CKV2?_AWS_\d+):(.+)", line)
                assert m and len(m.group(2).strip()) > 20, f"{path}: skip without a reason: {line.strip()}"
    checkov = shutil.which("checkov", path=os.path.dirname(__import__("sys").executable)) or shutil.which("checkov")
    assert checkov, "checkov is missing: run scripts/test-deps.sh"
    out = subprocess.run([checkov, "-d", TF_DIR, "--framework", "terraform", "--quiet", "--compact", "--skip-download", "-o", "json"],
                         capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(out.stdout)
    summary = report["summary"] if isinstance(report, dict) else report[0]["summary"]
    assert summary["failed"] == 0, out.stdout[-3000:]
    assert summary["passed"] > 40


def systemd_root():
    """A scratch root holding the units, the distribution's own units and stand-in binaries."""
    root = tempfile.mkdtemp(prefix="janitor-units-")
    units = os.path.join(root, "etc/systemd/system")
    os.makedirs(units)
    shutil.copytree("/lib/systemd/system", os.path.join(root, "usr/lib/systemd/system"), symlinks=True)
    for f in glob.glob(os.path.join(ROOT, "systemd", "*")):
        if f.endswith((".service", ".timer", ".mount")):
            shutil.copy(f, units)
    with open(os.path.join(units, "docker.service"), "w") as f:
        f.write("[Unit]\nDescription=stand-in\n[Service]\nExecStart=/usr/bin/dockerd\n")
    for b in ("usr/local/bin/janitord", "usr/local/bin/janitor-deadman", "usr/local/bin/janitor-prepare-cache", "usr/bin/dockerd"):
        p = os.path.join(root, b)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(p, 0o755)
    return root


UNITS = ["janitord.service", "janitor-deadman.service", "janitor-deadman.timer",
         "janitor-prepare-cache.service", "var-lib-janitor.mount"]


def test_systemd_units_verify_and_print_their_exposure():
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: run scripts/test-deps.sh (Debian package systemd)"
    root = systemd_root()
    out = subprocess.run([tool, "verify", f"--root={root}", *UNITS], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    sec = subprocess.run([tool, "security", "--offline=true", f"--root={root}", "janitord.service"], capture_output=True, text=True)
    exposure = [l for l in sec.stdout.splitlines() if "Overall exposure level" in l]
    print("\n" + "\n".join(exposure))
    assert exposure, sec.stdout + sec.stderr
    level = float(re.search(r"level for janitord.service: ([0-9.]+)", exposure[0]).group(1))
    assert level <= 3.0, f"janitord.service exposure {level} regressed (was 2.5)"


def test_janitord_unit_is_notify_with_a_watchdog_and_hardened():
    text = open(os.path.join(ROOT, "systemd", "janitord.service")).read()
    for line in ("Type=notify", "WatchdogSec=", "Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ReadWritePaths=", "PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet=CAP_CHOWN\n",
                 "RequiresMountsFor=/var/lib/janitor", "After=network-online.target docker.service"):
        assert line in text, line


@pytest.mark.parametrize("script", sorted(
    subprocess.run(["git", "ls-files", "*.sh"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    + [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "packer/scripts/*.sh")) + glob.glob(os.path.join(ROOT, "systemd/*.sh"))]
    + [".ci/run"]
))
def test_shellcheck(script):
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is missing: run scripts/test-deps.sh (Debian package shellcheck)"
    out = subprocess.run([tool, "-x", os.path.join(ROOT, script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def fake_machine(tmp_path, disks, filesystems=()):
    """A sysfs and /dev tree: disks is [(name, model or None, partitions)]; blkid reports a
    filesystem for the names in `filesystems`."""
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    for name, model, parts in disks:
        d = sysfs / "block" / name
        (d / "device").mkdir(parents=True)
        if model is not None:
            (d / "device" / "model").write_text(model.ljust(40) + "\n")
        for i in range(1, parts + 1):
            (d / f"{name}p{i}").mkdir()
    dev.mkdir()
    blkid = tmp_path / "blkid"
    have = " ".join(f"{dev}/{n}" for n in filesystems)
    blkid.write_text(f'#!/bin/sh\nfor d in {have}; do [ "$5" = "$d" ] && echo ext4; done\nexit 0\n')
    blkid.chmod(0o755)
    return dict(os.environ, JANITOR_SYSFS=str(sysfs), JANITOR_DEV=str(dev), JANITOR_BLKID=str(blkid),
                JANITOR_ROOT_DISK="nvme0n1", JANITOR_PREPARE_DRY_RUN="1")


def prepare(env):
    script = os.path.join(ROOT, "systemd", "janitor-prepare-cache.sh")
    return subprocess.run(["bash", script], env=env, capture_output=True, text=True)


EBS = "Amazon Elastic Block Store"
STORE = "Amazon EC2 NVMe Instance Storage"


@pytest.mark.parametrize("disks, filesystems, chosen", [
    # A g5: root EBS, the cache EBS, and an instance-store NVMe: the EBS volume is chosen.
    ([("nvme0n1", EBS, 1), ("nvme1n1", STORE, 0), ("nvme2n1", EBS, 0)], (), "nvme2n1"),
    ([("nvme0n1", EBS, 1), ("nvme1n1", EBS, 0), ("nvme2n1", STORE, 0), ("nvme3n1", STORE, 0)], (), "nvme1n1"),
    # Xen: no NVMe model, one blank non-root disk.
    ([("nvme0n1", None, 1), ("xvdf", None, 0)], (), "xvdf"),
    # A blank EBS beside one that already has a filesystem.
    ([("nvme0n1", EBS, 1), ("nvme1n1", EBS, 0), ("nvme2n1", EBS, 0)], ("nvme1n1",), "nvme2n1"),
])
def test_the_cache_disk_is_the_blank_ebs_volume(tmp_path, disks, filesystems, chosen):
    out = prepare(fake_machine(tmp_path, disks, filesystems))
    assert out.returncode == 0, out.stderr
    assert f"would format {tmp_path}/dev/{chosen} as janitor-cache" in out.stdout, out.stdout


@pytest.mark.parametrize("disks, says", [
    ([("nvme0n1", EBS, 1), ("nvme1n1", STORE, 0)], "EBS: none"),
    ([("nvme0n1", EBS, 1), ("nvme1n1", EBS, 0), ("nvme2n1", EBS, 0)], "EBS: nvme1n1 nvme2n1"),
    ([("nvme0n1", EBS, 1), ("nvme1n1", EBS, 2)], "nvme1n1 (has partitions)"),
])
def test_no_single_blank_ebs_volume_is_a_clear_failure(tmp_path, disks, says):
    out = prepare(fake_machine(tmp_path, disks))
    assert out.returncode == 1
    assert says in out.stderr, out.stderr
    assert "would format" not in out.stdout


# Terraform itself, offline: fmt, init from a local provider mirror, validate, and the
# mock-provider plan tests in infra/terraform/tests/. Without terraform on the machine these
# say so (loudly, in the output) and the HCL checks above still run.
TF_MIRRORS = [os.environ.get("JANITOR_TF_MIRROR", ""), "/opt/tf-plugins", "/usr/share/terraform/plugins"]


def terraform_or_skip():
    import shutil

    tf = shutil.which("terraform")
    if not tf:
        pytest.skip("TERRAFORM IS NOT INSTALLED: terraform fmt, validate and test did not run")
    mirror = next((m for m in TF_MIRRORS if m and os.path.isdir(os.path.join(m, "registry.terraform.io"))), None)
    if not mirror:
        pytest.skip("NO LOCAL TERRAFORM PROVIDER MIRROR (set JANITOR_TF_MIRROR): terraform validate and test did not run")
    return tf, mirror


@pytest.fixture(scope="module")
def initialised(tmp_path_factory):
    tf, mirror = terraform_or_skip()
    work = tmp_path_factory.mktemp("tf")
    config = work / "terraformrc"
    config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path = "{mirror}"\n    include = ["registry.terraform.io/*/*"]\n  }}\n'
        '  direct {\n    exclude = ["registry.terraform.io/*/*"]\n  }\n}\n'
    )
    copy = work / "terraform"
    import shutil

    shutil.copytree(TF_DIR, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfplan", ".terraform.lock.hcl"))
    env = dict(os.environ, TF_CLI_CONFIG_FILE=str(config), TF_DATA_DIR=str(work / "data"), TF_IN_AUTOMATION="1")
    out = subprocess.run([tf, "init", "-backend=false", "-input=false", "-no-color"], cwd=copy, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return tf, copy, env


def test_terraform_fmt():
    tf, _ = terraform_or_skip()
    out = subprocess.run([tf, "fmt", "-check", "-recursive", "-diff", TF_DIR], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_terraform_validate(initialised):
    tf, copy, env = initialised
    out = subprocess.run([tf, "validate", "-no-color"], cwd=copy, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_terraform_plan_tests_with_a_mocked_provider(initialised):
    tf, copy, env = initialised
    out = subprocess.run([tf, "test", "-no-color"], cwd=copy, env=env, capture_output=True, text=True)
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failed" in out.stdout, out.stdout


def test_the_heartbeat_file_survives_a_daemon_restart_and_both_sides_agree():
    env = open(os.path.join(ROOT, "systemd", "deadman.env")).read()
    deadman = re.search(r"^JANITOR_HEARTBEAT_FILE=(\S+)$", env, re.M).group(1)
    compute = open(os.path.join(TF_DIR, "compute.tf")).read()
    janitord = re.search(r'heartbeat_file = "([^"]+)"', compute).group(1)
    assert deadman == janitord, (deadman, janitord)
    # A RuntimeDirectory (/run/janitor) is emptied when janitord restarts: a healthy instance
    # would look dead to the timer.
    assert not deadman.startswith("/run/"), deadman
    assert deadman.startswith("/var/lib/janitor/"), deadman


def test_packer_template_is_formatted():
    """`packer fmt -check` where packer is installed; else the same HCL formatter through
    `terraform fmt` on a copy (packer and terraform share hclwrite's formatting)."""
    import shutil

    template = os.path.join(ROOT, "packer", "gpu-ami.pkr.hcl")
    if shutil.which("packer"):
        out = subprocess.run(["packer", "fmt", "-check", "-diff", template], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        return
    tf = shutil.which("terraform")
    if not tf:
        pytest.skip("NEITHER PACKER NOR TERRAFORM IS INSTALLED: the packer template's format was not checked")
    with tempfile.TemporaryDirectory() as d:
        copy = os.path.join(d, "gpu-ami.tf")
        shutil.copy(template, copy)
        out = subprocess.run([tf, "fmt", "-check", "-diff", copy], capture_output=True, text=True)
        assert out.returncode == 0, "packer/gpu-ami.pkr.hcl is not formatted:\n" + out.stdout + out.stderr


def test_the_ami_driver_runs_cuda_13_images_with_the_open_modules():
    template = open(os.path.join(ROOT, "packer", "gpu-ami.pkr.hcl")).read()
    install = open(os.path.join(ROOT, "packer", "scripts", "install.sh")).read()
    for text in (template, install):
        branch = re.search(r"nvidia-driver-(\d+)-server(-open)?", text)
        assert branch, "a driver branch is pinned"
        assert int(branch.group(1)) >= 580, f"CUDA 13 needs a driver >= 580, pinned {branch.group(0)}"
        assert branch.group(2) == "-open", f"the open kernel modules, pinned {branch.group(0)}"
    check = open(os.path.join(ROOT, "packer", "scripts", "check-gpu.sh")).read()
    assert "CUDA Version" in check, "the AMI's GPU check prints the CUDA version the driver supports"


def test_the_packer_build_opens_ssh_to_the_builder_only():
    template = open(os.path.join(ROOT, "packer", "gpu-ami.pkr.hcl")).read()
    assert re.search(r"temporary_security_group_source_public_ip\s*=\s*true", template), \
        "without it the amazon-ebs builder opens SSH to 0.0.0.0/0"


def test_janitord_never_hits_a_start_limit_on_first_boot():
    unit = open(os.path.join(ROOT, "systemd", "janitord.service")).read()
    assert re.search(r"^StartLimitIntervalSec=0$", unit, re.M), unit
    after = re.search(r"^After=(.*)$", unit, re.M).group(1).split()
    assert "janitor-prepare-cache.service" in after and "var-lib-janitor.mount" in after, after


def test_tflint_is_configured_with_the_aws_ruleset():
    text = open(os.path.join(TF_DIR, ".tflint.hcl")).read()
    assert 'source  = "github.com/terraform-linters/tflint-ruleset-aws"' in text
    assert 'preset  = "recommended"' in text


def test_every_terraform_runner_is_new_enough_for_the_backend():
    """The S3 backend's use_lockfile needs Terraform 1.11: the config, the Makefile's tool image
    and the workflows all say so."""
    versions = open(os.path.join(TF_DIR, "versions.tf")).read()
    assert re.search(r'required_version\s*=\s*">=\s*1\.1[1-9]', versions), versions
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    image = re.search(r"hashicorp/terraform:(\d+)\.(\d+)", makefile)
    assert image and (int(image.group(1)), int(image.group(2))) >= (1, 11), image
    for wf in glob.glob(os.path.join(ROOT, ".github", "workflows", "*.yml")):
        for major, minor in re.findall(r"terraform_version:\s*(\d+)\.(\d+)", open(wf).read()):
            assert (int(major), int(minor)) >= (1, 11), wf


def test_the_agent_bedrock_role_invokes_only_the_configured_models():
    tf = terraform()
    doc = tf[("data", "aws_iam_policy_document", "agent_bedrock")]
    statements = doc["statement"]
    assert len(statements) == 1
    actions = set(first(statements[0]["actions"]))
    assert actions == {"bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"}
    assert first(statements[0]["resources"]) == "${local.bedrock_model_arns}"
    trust = tf[("data", "aws_iam_policy_document", "agent_bedrock_trust")]
    principal = first(first(trust["statement"])["principals"])
    assert first(principal["identifiers"]) == ["${aws_iam_role.instance.arn}"]
    assume = tf[("data", "aws_iam_policy_document", "assume_agent_bedrock")]
    assert first(first(assume["statement"])["actions"]) == ["sts:AssumeRole"]
    assert "-agent-bedrock" in str(first(assume["statement"])["resources"])
    # janitord is told the role only when it exists (the plan cannot see user data).
    compute = open(os.path.join(TF_DIR, "compute.tf")).read()
    guarded = compute.split("%{if local.bedrock~}")[1].split("%{endif~}")[0]
    assert "agent_bedrock_role_arn" in guarded and "agent_bedrock_region" in guarded


def test_each_pools_daemon_reads_its_own_queue_and_expects_a_gpu_only_there():
    compute = open(os.path.join(TF_DIR, "compute.tf")).read()
    toml = compute.split("name => <<-TOML")[1].split("TOML")[0]
    assert 'queue_url = "${aws_sqs_queue.jobs[name].url}"' in toml
    assert "expect_gpus = ${p.gpu}" in toml
    main = open(os.path.join(TF_DIR, "main.tf")).read()
    assert "gpu                    = p.gpu_memory_gb > 0" in main
    lt = terraform()[("resource", "aws_launch_template", "pool")]
    assert "local.janitord_toml[each.key]" in first(lt["user_data"])


def test_instances_prefetch_and_pin_the_shipped_agent():
    compute = open(os.path.join(TF_DIR, "compute.tf")).read()
    toml = compute.split("name => <<-TOML")[1].split("TOML")[0]
    for key in ("prefetch_images", "pinned_images"):
        line = next(l for l in toml.splitlines() if l.strip().startswith(key))
        assert "aws_ecr_repository.agent.repository_url" in line, line
