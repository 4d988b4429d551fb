//! The crate graph and the pure modules, checked from the sources: ctl and the daemon stand
//! side by side on the pipeline, the services and the model; only the services crate depends on
//! AWS SDKs and Docker; the state machine and the decisions do no I/O.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn deps(krate: &str) -> Vec<String> {
    let root = janitor_testkit::workspace_root();
    let text = std::fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    doc.get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn crates_depend_one_way() {
    // (crate, workspace crates it may use)
    let allowed: &[(&str, &[&str])] = &[
        ("model", &[]),
        ("services", &["janitor-model"]),
        ("pipeline", &["janitor-model", "janitor-services"]),
        (
            "daemon",
            &["janitor-model", "janitor-services", "janitor-pipeline"],
        ),
        (
            "ctl",
            &["janitor-model", "janitor-services", "janitor-pipeline"],
        ),
    ];
    for (krate, may) in allowed {
        let ours: Vec<String> = deps(krate)
            .into_iter()
            .filter(|d| d.starts_with("janitor"))
            .collect();
        for d in &ours {
            assert!(
                may.contains(&d.as_str()),
                "{krate} depends on {d}; it may use only {may:?}"
            );
        }
    }
}

#[test]
fn only_the_services_talk_to_aws_and_docker() {
    for krate in ["model", "pipeline"] {
        for d in deps(krate) {
            assert!(
                !d.starts_with("aws-") && d != "bollard" && d != "nvml-wrapper",
                "{krate} must not depend on {d}: outside services live in janitor-services"
            );
        }
    }
}

#[test]
fn the_state_machine_and_the_decisions_do_no_io() {
    let root = janitor_testkit::workspace_root();
    for file in ["daemon/src/machine.rs", "daemon/src/decide.rs"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for io in [
            ".await",
            "async ",
            "tokio::",
            "std::fs",
            "std::net",
            "std::process",
            "Instant::now",
            "now_utc",
        ] {
            assert!(!code.contains(io), "{file} must stay pure, but uses `{io}`");
        }
    }
    assert!(Path::new(&root.join("daemon/src/event_loop.rs")).exists());
}

#[test]
fn ctl_uses_docker_only_for_local_runs() {
    let dir = janitor_testkit::workspace_root().join("ctl/src");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name != "local.rs" && name != "error.rs" {
            for docker in ["DockerEngine", "ContainerEngine", "janitor_pipeline"] {
                assert!(
                    !text.contains(docker),
                    "ctl/src/{name} uses {docker}: only local.rs may"
                );
            }
        }
    }
}

/// Every `.rs` file under the given directories, relative to the workspace root.
fn sources(dirs: &[&str]) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = janitor_testkit::workspace_root();
    let mut files = Vec::new();
    for d in dirs {
        walk(&root.join(d), &mut files);
    }
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Host-side git reads untrusted checkouts: one door, `pipeline/src/git.rs`, with its
/// isolation (SECURITY.md). No other shipped code starts git.
#[test]
fn only_the_git_runner_runs_git() {
    for (file, text) in sources(&[
        "model/src",
        "services/src",
        "pipeline/src",
        "daemon/src",
        "ctl/src",
    ]) {
        if file == "pipeline/src/git.rs" {
            continue;
        }
        let code = text.split("#[cfg(test)]").next().unwrap();
        assert!(
            !code.contains("Command::new(\"git\")"),
            "{file} runs git itself: use janitor_pipeline::git (isolated config, deadlines)"
        );
    }
}

/// janitorctl prints what repositories, workers and agents wrote (test names, causes, the
/// agent's summary): every print goes through `ctl/src/term.rs`, which shows escape codes
/// instead of obeying them. The progress line's own redraw is the one exception, and it
/// escapes the line it draws.
#[test]
fn every_janitorctl_print_goes_through_the_terminal_escaper() {
    for (file, text) in sources(&["ctl/src"]) {
        if file == "ctl/src/term.rs" {
            continue;
        }
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            let raw = ["println!(", "print!(", "eprintln!(", "eprint!("]
                .iter()
                .any(|m| {
                    line.match_indices(m).any(|(at, _)| {
                        !line[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                    })
                });
            let redraw = line.contains(r#"eprint!("\r\x1b[2K{}", crate::term::line(&line))"#);
            assert!(
                !raw || redraw,
                "{file}:{}: prints without ctl::term (use say!/tell!): {line}",
                n + 1
            );
        }
    }
}
