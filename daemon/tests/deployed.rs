//! janitord as it is deployed: under its own unit (`systemd/janitord.service`, unchanged),
//! installed where the AMI installs it, in a box booted with systemd (`testkit::systemd_box`,
//! whose docs name the stand-ins a container needs), as a member of moto's Auto Scaling group,
//! on the machine's Docker engine. The unit's sandbox is the point: no capability but
//! CAP_CHOWN, no new privileges, a read-only system, a private /tmp.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use janitor_testkit::systemd_box::{BoxSpec, SystemdBox, CACHE_DIR};
use janitor_testkit::{agent_image, broken_worker, ensure_base_image, git_repo, spec, Fixture};

/// Where the box's janitord serves `/health` (the host's loopback: the box shares its network).
const HEALTH: &str = "127.0.0.1:19464";

fn janitord() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_janitord"))
}

/// Test images other tests of this machine use at the same time: the box's janitord prunes
/// the host's engine as it would an instance's, and must leave them.
const SHARED_IMAGES: &[&str] = &[
    "janitor-test-base:latest",
    "janitor-python-base:bookworm",
    "janitor-runpod-base:1.12.0",
    "janitor-runpod-base:1.3.3",
    "janitor-agent:test",
];

/// The settings Terraform's launch template writes (`infra/terraform/compute.tf`), for the
/// fixture's queue, bucket and log group; plus what a test on a shared machine needs, each
/// said: local repositories (no GitHub here), a short poll, /health on a port of its own, the
/// other tests' images pinned.
fn toml(fx: &Fixture) -> String {
    let pinned: Vec<String> = SHARED_IMAGES.iter().map(|i| format!("\"{i}\"")).collect();
    format!(
        r#"queue_url = "{}"
bucket = "{}"
log_group = "{}"
cache_dir = "/var/lib/janitor"
require_cache_volume = true
expect_gpus = false
heartbeat_file = "/var/lib/janitor/janitord.heartbeat"
# The test's own:
allow_local_repos = true
poll_wait_seconds = 1
metrics_addr = "{HEALTH}"
pinned_images = [{}]
"#,
        fx.queue_url,
        fx.bucket,
        fx.log_group,
        pinned.join(", ")
    )
}

/// A fixture whose group has one instance, and a box booted as that instance.
async fn booted(repos: &Path) -> (Fixture, String, SystemdBox, (i32, String)) {
    let fx = Fixture::start(&[]).await;
    let instance = fx.launch(1).await.remove(0);
    let text = toml(&fx);
    let (b, started) = SystemdBox::boot(BoxSpec {
        janitord: janitord(),
        toml: &text,
        aws_env: fx.aws_env_for(&instance),
        extra_env: Vec::new(),
        shared: vec![repos.to_path_buf()],
    });
    (fx, instance, b, started)
}

/// A directory for test repositories that the box sees at the same path.
fn repos_dir() -> tempfile::TempDir {
    janitor_testkit::systemd_box::shared_dir()
}

fn health() -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(HEALTH).unwrap();
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {HEALTH}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let body = resp.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// An image whose config says it was created in 2020: the seed's table prunes unused images
/// older than 72 hours. Made from the base image's layers by rewriting its config.
fn ancient_image(tag: &str) {
    ensure_base_image();
    let script = format!(
        r#"
import hashlib, io, json, subprocess, tarfile
saved = subprocess.run(["docker", "save", "{base}"], check=True, capture_output=True).stdout
src = tarfile.open(fileobj=io.BytesIO(saved))
manifest = json.load(src.extractfile("manifest.json"))
config = json.load(src.extractfile(manifest[0]["Config"]))
config["created"] = "2020-01-01T00:00:00Z"
raw = json.dumps(config).encode()
name = hashlib.sha256(raw).hexdigest() + ".json"
manifest[0]["Config"], manifest[0]["RepoTags"] = name, ["{tag}"]
out = io.BytesIO()
dst = tarfile.open(fileobj=out, mode="w")
for m in src.getmembers():
    if m.name in ("manifest.json", "repositories") or m.name.endswith(".json") and "/" not in m.name:
        continue
    dst.addfile(m, src.extractfile(m) if m.isfile() else None)
for n, data in ((name, raw), ("manifest.json", json.dumps(manifest).encode())):
    info = tarfile.TarInfo(n); info.size = len(data); dst.addfile(info, io.BytesIO(data))
dst.close()
subprocess.run(["docker", "load", "-q"], input=out.getvalue(), check=True, capture_output=True)
"#,
        base = janitor_testkit::BASE_IMAGE
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn image_exists(tag: &str) -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", tag])
        .output()
        .unwrap()
        .status
        .success()
}

/// Under its unit janitord says READY (`Type=notify`) only once it can work, holds CAP_CHOWN
/// and nothing else, and runs the fix loop to its end: the agent (uid 10001) changes the
/// checkout and leaves files and directories with modes root without capabilities could not
/// read or remove, the change is validated again and kept as a patch, and the job's directory
/// is gone afterwards. Its cleanup reaches the host's Docker (an unused image from 2020 is
/// pruned) and journald without an error; the AMI's tmpfiles rule empties /tmp of old files.
#[tokio::test(flavor = "multi_thread")]
async fn under_its_unit_janitord_is_ready_fixes_a_worker_and_leaves_nothing_behind() {
    ensure_base_image();
    agent_image(
        "janitor-test-box-fixer:latest",
        r#"cd /workspace
mkdir -p locked/deeper
echo mine > locked/deeper/notes
chmod 000 locked/deeper/notes
chmod 500 locked/deeper locked
sed -i 's#/models/large.bin#/models/tiny.bin#' config.env
umask 077
printf '{"status":"fixed","summary":"MODEL fixed"}' > "$JANITOR_RESULT""#,
    );
    ancient_image("janitor-test-ancient:latest");
    let repos = repos_dir();
    let url = broken_worker(repos.path(), "box-fix");
    let (fx, instance, b, started) = booted(repos.path()).await;
    assert_eq!(started.0, 0, "{started:?}\n{}", b.journal("janitord"));
    assert_eq!(b.property("janitord", "ActiveState"), "active");
    assert_eq!(b.property("janitord", "Type"), "notify");
    let pid = b.property("janitord", "MainPID");
    let caps = b.sh(&format!("grep -E '^Cap(Eff|Bnd)' /proc/{pid}/status"));
    assert!(caps.contains("CapEff:\t0000000000000001"), "{caps}");
    assert!(caps.contains("CapBnd:\t0000000000000001"), "{caps}");

    let mut job = spec("box-fix", &url, Duration::from_secs(240));
    job.agent_image = Some("janitor-test-box-fixer:latest".into());
    let run_id = "20261208T010000Z-box";
    let job_id = fx.send_job(run_id, &job).await;
    let report = fx
        .wait_for_json(
            &janitor_model::ledger::report_key(run_id, &job_id),
            Duration::from_secs(240),
        )
        .await;
    assert_eq!(
        report["status"],
        "fixed",
        "{report:#}\n{}",
        b.journal("janitord")
    );
    assert_eq!(report["instance"]["id"], instance.as_str());
    let patch_key = report["fix"]["patch"].as_str().unwrap();
    let patch = String::from_utf8(fx.bytes(patch_key).await).unwrap();
    assert!(patch.contains("+MODEL=/models/tiny.bin"), "{patch}");
    assert!(patch.contains("locked/deeper/notes"), "{patch}");
    // Nothing of the job is left on the cache volume.
    let work = Path::new(CACHE_DIR).join("work");
    b.wait_until(
        "the job's directory removed",
        Duration::from_secs(30),
        || std::fs::read_dir(&work).map_or(true, |mut d| d.next().is_none()),
    );
    // The cleanup after the job: the host's engine pruned, journald vacuumed, no error.
    b.wait_until("a cleanup after the job", Duration::from_secs(60), || {
        health()["cache"]["last_cleanup"]["old_images_removed"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
            || !image_exists("janitor-test-ancient:latest")
    });
    let cleanup = health()["cache"]["last_cleanup"].clone();
    assert_eq!(cleanup["errors"], serde_json::json!([]), "{cleanup:#}");
    assert!(!image_exists("janitor-test-ancient:latest"), "{cleanup:#}");
    for shared in SHARED_IMAGES {
        assert!(
            !cleanup["old_images_removed"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i == shared),
            "{shared} pruned: {cleanup:#}"
        );
    }
    // /tmp: the AMI's tmpfiles rule, run by the OS's own cleaning service.
    b.sh("touch -d '2 days ago' /tmp/stale && touch /tmp/fresh");
    b.sh("systemctl start systemd-tmpfiles-clean.service");
    assert_eq!(
        b.exec("test -e /tmp/stale").0,
        1,
        "a 2-day-old file stays in /tmp"
    );
    assert_eq!(b.exec("test -e /tmp/fresh").0, 0);
    assert_eq!(
        b.property("systemd-tmpfiles-clean.timer", "ActiveState"),
        "active"
    );
}

/// `systemctl stop` while a job runs (KillMode=mixed, TimeoutStopSec=120): janitord stops the
/// container, stores the report as `interrupted` and makes the message visible again, inside
/// the unit's stop timeout.
#[tokio::test(flavor = "multi_thread")]
async fn systemctl_stop_during_a_job_stores_its_report_and_hands_the_message_back() {
    ensure_base_image();
    let repos = repos_dir();
    let url = git_repo(
        repos.path(),
        "box-slow",
        &[(
            "Dockerfile",
            &janitor_testkit::dockerfile("echo started; sleep 300"),
        )],
    );
    let (fx, instance, b, started) = booted(repos.path()).await;
    assert_eq!(started.0, 0, "{started:?}");
    let run_id = "20261208T010000Z-boxstop";
    let job_id = fx
        .send_job(run_id, &spec("box-slow", &url, Duration::from_secs(600)))
        .await;
    fx.wait_for_json(
        &janitor_model::ledger::started_key(run_id, &job_id, 1),
        Duration::from_secs(120),
    )
    .await;
    // The worker's own line, shipped to its log stream: it is running.
    fx.wait_for_log_line(&format!("{instance}/{job_id}"), "[run] started")
        .await;
    let t = Instant::now();
    b.sh("systemctl stop janitord");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(120), "stopped in {took:?}");
    let report = fx
        .wait_for_json(
            &janitor_model::ledger::report_key(run_id, &job_id),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(report["status"], "interrupted", "{report:#}");
    let (waiting, in_flight) = fx.depth(&fx.queue_url).await;
    assert_eq!(
        (waiting, in_flight),
        (1, 0),
        "the message is back on the queue"
    );
    assert_eq!(b.property("janitord", "ActiveState"), "inactive");
    assert_eq!(b.property("janitord", "Result"), "success");
}

/// A hung loop (janitord stopped with SIGSTOP: no watchdog ping) is killed by systemd's
/// watchdog (WatchdogSec=60) and started again (Restart=always).
#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_restarts_a_hung_janitord() {
    let repos = repos_dir();
    let (_fx, _instance, b, started) = booted(repos.path()).await;
    assert_eq!(started.0, 0, "{started:?}");
    let pid = b.property("janitord", "MainPID");
    assert_eq!(b.property("janitord", "NRestarts"), "0");
    b.sh(&format!("kill -STOP {pid}"));
    b.wait_until(
        "the watchdog to restart janitord",
        Duration::from_secs(150),
        || {
            b.property("janitord", "NRestarts") == "1"
                && b.property("janitord", "ActiveState") == "active"
                && b.property("janitord", "MainPID") != pid
        },
    );
    assert!(
        b.journal("janitord").contains("Watchdog timeout"),
        "{}",
        b.journal("janitord")
    );
}

/// janitord is dead (stopped) and its heartbeat 20 minutes old: the AMI's dead-man timer is
/// armed, and its service takes the instance out of the group with the desired capacity
/// lowered, then powers it off (the box's container ends).
#[tokio::test(flavor = "multi_thread")]
async fn the_dead_man_takes_a_dead_instance_out_of_its_group_and_powers_it_off() {
    let repos = repos_dir();
    let (fx, instance, b, started) = booted(repos.path()).await;
    assert_eq!(started.0, 0, "{started:?}");
    assert_eq!(b.property("janitor-deadman.timer", "ActiveState"), "active");
    assert_eq!(
        b.property("janitor-deadman.timer", "UnitFileState"),
        "enabled"
    );
    assert_eq!(fx.group().await.0, 1);
    b.sh("systemctl stop janitord");
    b.sh(&format!(
        "touch -d '20 minutes ago' {CACHE_DIR}/janitord.heartbeat"
    ));
    // What the timer starts every minute.
    let _ = b.exec("systemctl start janitor-deadman.service");
    b.wait_until("the box to power off", Duration::from_secs(90), || {
        !b.running()
    });
    let (desired, members) = fx.group().await;
    assert_eq!(desired, 0, "the desired capacity lowered");
    assert!(
        !members.iter().any(|(id, _, _)| id == &instance),
        "{instance} left the group: {members:?}"
    );
}
