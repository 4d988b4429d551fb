//! The dead-man script's decision, driven through its test variables (it never powers off here).
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn decide(file: &std::path::Path, now: i64, uptime: u64) -> (i32, String) {
    let script = janitor_testkit::workspace_root().join("systemd/janitor-deadman.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("JANITOR_HEARTBEAT_FILE", file)
        .env("JANITOR_DEADMAN_LIMIT_SECONDS", "600")
        .env("JANITOR_DEADMAN_NOW", now.to_string())
        .env("JANITOR_DEADMAN_UPTIME", uptime.to_string())
        .env("JANITOR_DEADMAN_DRY_RUN", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string()
            + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn powers_off_only_when_the_heartbeat_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("janitord.heartbeat");
    // No heartbeat yet: fine shortly after boot, fatal once past the limit.
    let (code, out) = decide(&file, 1_000_000, 120);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "janitor-deadman: ok: no heartbeat yet, 120s after boot (limit 600s)"
        )
    );
    let (_, out) = decide(&file, 1_000_000, 601);
    assert!(
        out.starts_with("janitor-deadman: poweroff: no heartbeat at"),
        "{out}"
    );
    assert!(
        out.contains("would run `/usr/local/bin/janitord leave`, then power off"),
        "it leaves the group before powering off, so no replacement is launched: {out}"
    );

    std::fs::write(&file, "x").unwrap();
    let st = Command::new("touch")
        .arg("-d")
        .arg("@1000000")
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    let (_, out) = decide(&file, 1_000_600, 9_999);
    assert!(
        out.contains("ok: heartbeat") && out.contains("is 600s old (limit 600s)"),
        "{out}"
    );
    let (_, out) = decide(&file, 1_000_601, 9_999);
    assert!(
        out.contains("poweroff: heartbeat") && out.contains("is 601s old (limit 600s)"),
        "{out}"
    );
}

#[test]
fn refuses_a_limit_that_would_kill_healthy_instances() {
    let dir = tempfile::tempdir().unwrap();
    let script = janitor_testkit::workspace_root().join("systemd/janitor-deadman.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("JANITOR_HEARTBEAT_FILE", dir.path().join("h"))
        .env("JANITOR_DEADMAN_LIMIT_SECONDS", "5")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a whole number of at least 60"));
}
