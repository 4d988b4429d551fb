//! An instance in a container, for the tests of janitord as it is deployed: the Debian image
//! of `scripts/systemd-image.sh` booted with systemd as PID 1 (`--cap-add SYS_ADMIN`, no
//! seccomp profile, the host's cgroups read-only; never `--privileged`), with the project's
//! files installed where `packer/scripts/install.sh` puts them on the AMI, unchanged, and the
//! units enabled by that script's own `systemctl enable` line. What a container cannot do as an
//! instance does is replaced by a stand-in, each named here and nowhere else:
//!
//! - Docker: the box runs no engine of its own. The host's socket is mounted at
//!   `/run/docker.sock` and `docker.service` is a unit that checks it (the AMI's drop-in for
//!   Docker's own unit is not installed: there is no `dockerd` to start).
//! - The EBS cache volume: `/var/lib/janitor` is the host's directory of the same path (the
//!   host's engine mounts job directories by their paths, so both sides must agree), so
//!   `janitor-prepare-cache.service` has nothing to format (a drop-in makes it `/bin/true`).
//! - AWS: janitord and the dead-man's `janitord leave` reach the fixture's moto and the
//!   instance's IMDS through a drop-in's environment (an instance reaches AWS itself).
//!
//! The host directory is shared, so one box runs at a time on a machine (a file lock).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// janitord's cache directory on the AMI, the same path on the host and in the box.
pub const CACHE_DIR: &str = "/var/lib/janitor";

/// Where tests keep the repositories a box's janitord clones, mounted at the same path: not
/// under `/tmp` or `/var/tmp` (the unit gives janitord private ones), nor under the workspace
/// (a clone of it may be under `/tmp`).
pub const SHARED_ROOT: &str = "/var/lib/janitor-test-repos";

/// A fresh directory under [`SHARED_ROOT`] for one test's repositories.
pub fn shared_dir() -> tempfile::TempDir {
    std::fs::create_dir_all(SHARED_ROOT).unwrap();
    tempfile::tempdir_in(SHARED_ROOT).unwrap()
}

/// What to install and how the box reaches AWS.
pub struct BoxSpec<'a> {
    /// The janitord binary installed as `/usr/local/bin/janitord`.
    pub janitord: &'a Path,
    /// `/etc/janitor/janitord.toml`.
    pub toml: &'a str,
    /// janitord's (and the dead-man's) way to AWS here: `AWS_*` and the IMDS endpoint.
    pub aws_env: Vec<(String, String)>,
    /// More of janitord's environment, each a stand-in the calling test names.
    pub extra_env: Vec<(String, String)>,
    /// Host paths mounted read-only at the same path in the box (local repositories).
    pub shared: Vec<PathBuf>,
}

/// A booted box; removed, and the host's cache directory emptied, when dropped.
pub struct SystemdBox {
    pub name: String,
    _lock: std::fs::File,
}

fn docker(args: &[&str]) -> (i32, String) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The box image's tag, made by `scripts/systemd-image.sh` once per machine (file-locked).
pub fn ensure_image() -> String {
    let lock =
        std::fs::File::create(std::env::temp_dir().join("janitor-systemd-image.lock")).unwrap();
    lock.lock().unwrap();
    let out = Command::new("bash")
        .arg(crate::workspace_root().join("scripts/systemd-image.sh"))
        .output()
        .expect("bash must be installed");
    assert!(
        out.status.success(),
        "could not make the systemd box image (mmdebstrap and Debian's archive: scripts/test-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Empties the host's cache directory (the box's janitord wrote it, the agent as uid 10001).
fn empty_cache_dir() {
    let dir = Path::new(CACHE_DIR);
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
    }
}

/// The units `packer/scripts/install.sh` enables on the AMI with janitord, from its own line.
fn ami_enabled_units() -> Vec<String> {
    let script =
        std::fs::read_to_string(crate::workspace_root().join("packer/scripts/install.sh")).unwrap();
    let line = script
        .lines()
        .find(|l| l.trim_start().starts_with("systemctl enable ") && l.contains("janitord.service"))
        .expect("install.sh enables janitord's units with one `systemctl enable` line");
    line.split_whitespace()
        .skip(2)
        .map(str::to_string)
        .collect()
}

fn env_lines(env: &[(String, String)]) -> String {
    env.iter()
        .map(|(k, v)| format!("Environment=\"{k}={v}\"\n"))
        .collect()
}

impl SystemdBox {
    /// Boots a box with `spec` installed and the AMI's units enabled and started; returns it
    /// once `systemctl start` of them returned (for janitord, `Type=notify`: once it said
    /// READY, or failed).
    pub fn boot(spec: BoxSpec<'_>) -> (SystemdBox, (i32, String)) {
        let image = ensure_image();
        let lock =
            std::fs::File::create(std::env::temp_dir().join("janitor-systemd-box.lock")).unwrap();
        lock.lock().unwrap();
        empty_cache_dir();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "janitor-box-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let _ = docker(&["rm", "-f", &name]);
        let cache = format!("{CACHE_DIR}:{CACHE_DIR}");
        let mut args: Vec<String> = [
            "create",
            "--name",
            &name,
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/tmp",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "--network",
            "host",
            "-v",
            "/var/run/docker.sock:/run/docker.sock",
            "-v",
            &cache,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for p in &spec.shared {
            args.push("-v".into());
            args.push(format!("{0}:{0}:ro", p.display()));
        }
        args.push(image);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = docker(&argv);
        assert_eq!(code, 0, "docker create: {out}");
        let stage = tempfile::tempdir().unwrap();
        stage_files(stage.path(), &spec);
        let (code, out) = docker(&[
            "cp",
            &format!("{}/.", stage.path().display()),
            &format!("{name}:/"),
        ]);
        assert_eq!(code, 0, "docker cp: {out}");
        let (code, out) = docker(&["start", &name]);
        assert_eq!(code, 0, "docker start: {out}");
        let b = SystemdBox { name, _lock: lock };
        b.wait_until("systemd to finish booting", Duration::from_secs(60), || {
            let s = b.exec("systemctl is-system-running").1;
            matches!(s.trim(), "running" | "degraded")
        });
        let units = ami_enabled_units();
        let units = units.join(" ");
        let (code, out) = b.exec(&format!("systemctl enable {units} 2>&1"));
        assert_eq!(code, 0, "the AMI's `systemctl enable {units}`: {out}");
        let started = b.exec(&format!("systemctl start {units} 2>&1"));
        (b, started)
    }

    /// `sh -c CMD` in the box: its exit code and output.
    pub fn exec(&self, cmd: &str) -> (i32, String) {
        docker(&["exec", &self.name, "sh", "-c", cmd])
    }

    /// `sh -c CMD` in the box; its output. Panics when it fails.
    pub fn sh(&self, cmd: &str) -> String {
        let (code, out) = self.exec(cmd);
        assert_eq!(code, 0, "`{cmd}` in the box: {out}");
        out
    }

    /// `systemctl show -p PROPERTY --value UNIT`.
    pub fn property(&self, unit: &str, property: &str) -> String {
        self.sh(&format!("systemctl show -p {property} --value {unit}"))
            .trim()
            .to_string()
    }

    /// A unit's journal, messages only.
    pub fn journal(&self, unit: &str) -> String {
        self.exec(&format!("journalctl -u {unit} --no-pager -o cat 2>&1"))
            .1
    }

    /// Whether the box's container still runs (a poweroff ends it).
    pub fn running(&self) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.name])
            .1
            .trim()
            == "true"
    }

    /// Polls `check` every half second until it holds; panics after `limit` naming `what`,
    /// with janitord's journal.
    pub fn wait_until(&self, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !check() {
            if start.elapsed() > limit {
                panic!(
                    "{what}: not within {limit:?}\njanitord's journal:\n{}",
                    self.journal("janitord")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for SystemdBox {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
        empty_cache_dir();
    }
}

/// The files `packer/scripts/install.sh` installs, at its paths, and the box's stand-ins.
fn stage_files(root: &Path, spec: &BoxSpec<'_>) {
    use std::os::unix::fs::PermissionsExt;
    let src = crate::workspace_root().join("systemd");
    let put = |to: &str, text: &[u8], mode: u32| {
        let path = root.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let file = |name: &str| std::fs::read(src.join(name)).unwrap();
    put(
        "/usr/local/bin/janitord",
        &std::fs::read(spec.janitord).unwrap(),
        0o755,
    );
    put(
        "/usr/local/bin/janitor-deadman",
        &file("janitor-deadman.sh"),
        0o755,
    );
    put(
        "/usr/local/bin/janitor-prepare-cache",
        &file("janitor-prepare-cache.sh"),
        0o755,
    );
    put("/etc/janitor/deadman.env", &file("deadman.env"), 0o644);
    put("/etc/janitor/janitord.toml", spec.toml.as_bytes(), 0o644);
    for unit in [
        "janitord.service",
        "janitor-deadman.service",
        "janitor-deadman.timer",
        "janitor-prepare-cache.service",
        "var-lib-janitor.mount",
    ] {
        put(&format!("/etc/systemd/system/{unit}"), &file(unit), 0o644);
    }
    put(
        "/etc/tmpfiles.d/tmp.conf",
        &file("tmpfiles.d/tmp.conf"),
        0o644,
    );
    put(
        "/etc/systemd/journald.conf.d/janitor.conf",
        b"[Journal]\nMaxRetentionSec=3day\n",
        0o644,
    );
    // The stand-ins.
    put(
        "/etc/systemd/system/docker.service",
        b"# The box's stand-in for Docker: the host's engine, through its socket.\n[Unit]\nDescription=Docker (the host's engine through /run/docker.sock)\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/bin/test -S /run/docker.sock\n\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    put(
        "/etc/systemd/system/janitor-prepare-cache.service.d/box.conf",
        b"# The box has no EBS cache volume to format: /var/lib/janitor is the host's directory.\n[Service]\nExecStart=\nExecStart=/bin/true\n",
        0o644,
    );
    let aws = env_lines(&spec.aws_env);
    put(
        "/etc/systemd/system/janitord.service.d/box.conf",
        format!(
            "# The box reaches AWS at the fixture's moto and the instance's IMDS.\n[Service]\n{aws}{}",
            env_lines(&spec.extra_env)
        )
        .as_bytes(),
        0o644,
    );
    put(
        "/etc/systemd/system/janitor-deadman.service.d/box.conf",
        format!("# `janitord leave` reaches AWS at the fixture's moto.\n[Service]\n{aws}")
            .as_bytes(),
        0o644,
    );
}
