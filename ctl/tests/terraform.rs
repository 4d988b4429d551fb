//! `infra/terraform` applied for real against moto (`testkit::terraform`: the fixture answers
//! what moto lacks, so nothing of the configuration is left out), then used as it is deployed:
//! janitorctl reads Terraform's outputs as `make infra-apply` writes them, and a janitord
//! booted under its unit (`testkit::systemd_box`) with the launch template's user data as
//! Terraform rendered it runs the job janitorctl sent to the queue Terraform made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use janitor_testkit::systemd_box::{BoxSpec, SystemdBox};
use janitor_testkit::terraform::{janitord_toml, Applied, Terraform};
use janitor_testkit::{dockerfile, ensure_base_image, git_repo, Fixture};

const NOTHING: Applied = Applied {
    added: 0,
    changed: 0,
    destroyed: 0,
};

fn ctl_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_janitorctl"))
}

/// `janitorctl --env dev ARGS` in `root` (where `infra/env/dev.json` is), against moto.
fn ctl(fx: &Fixture, root: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(ctl_bin())
        .args(["--env", "dev"])
        .args(args)
        .current_dir(root)
        .envs(fx.aws_env())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A first apply: it adds every resource Terraform then manages (not its data sources) and
/// changes nothing else; how many.
fn first_apply(tf: &Terraform, vars: &[String]) -> u32 {
    let first = tf.apply(vars);
    let made = tf
        .state()
        .iter()
        .filter(|r| !r.starts_with("data."))
        .count() as u32;
    assert_eq!(
        first,
        Applied {
            added: made,
            changed: 0,
            destroyed: 0
        }
    );
    made
}

/// dev: applied, applied again with nothing to do, an empty plan. janitorctl (`scale`, `run`,
/// `status`, `show`) finds the queues, groups and bucket Terraform made by the names it derives
/// from Terraform's outputs; the cpu pool's instance boots janitord under its unit with the
/// janitord.toml its launch template's user data writes, unchanged, and runs the job. Then
/// everything is destroyed.
#[tokio::test(flavor = "multi_thread")]
async fn dev_applies_twice_plans_empty_and_janitor_runs_on_what_it_made() {
    ensure_base_image();
    let fx = Fixture::bare().await;
    let tf = Terraform::init(&fx);
    let vars = tf.vars(&fx, "dev", "");
    let made = first_apply(&tf, &vars);
    assert!(made >= 35, "{:?}", tf.state());
    assert_eq!(tf.apply(&vars), NOTHING, "a second apply changes nothing");
    if let Some(plan) = tf.plan_changes(&vars) {
        panic!("the plan after two applies is not empty:\n{plan}");
    }

    // What `make infra-apply` writes for janitorctl.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("infra/env")).unwrap();
    let outputs = tf.outputs();
    std::fs::write(
        root.path().join("infra/env/dev.json"),
        serde_json::to_string_pretty(&outputs).unwrap(),
    )
    .unwrap();
    let pools = &outputs["pools"]["value"];
    assert_eq!(pools["cpu"]["asg_name"], "janitor-dev-cpu");
    let bucket = outputs["bucket"]["value"].as_str().unwrap().to_string();

    let (code, out) = ctl(
        &fx,
        root.path(),
        &["scale", "--pool", "cpu", "--desired", "1"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Desired capacity of janitor-dev-cpu: 0 → 1"),
        "{out}"
    );
    let instance = fx.instances_of("janitor-dev-cpu").await.remove(0);

    // The cpu pool's instance: its launch template's user data, as Terraform rendered it.
    let lt = tf.resource(r#"aws_launch_template.pool["cpu"]"#);
    let user_data = fx.user_data(lt["id"].as_str().unwrap());
    let toml = janitord_toml(&user_data);
    assert!(
        toml.contains(pools["cpu"]["queue_url"].as_str().unwrap()),
        "{toml}"
    );
    assert!(toml.contains("expect_gpus = false"), "{toml}");
    let repos = janitor_testkit::systemd_box::shared_dir();
    git_repo(
        repos.path(),
        "tf-worker",
        &[("Dockerfile", &dockerfile("echo served from the pool"))],
    );
    let (b, started) = SystemdBox::boot(BoxSpec {
        janitord: &janitor_testkit::janitord_beside(ctl_bin()),
        toml: &toml,
        aws_env: fx.aws_env_for(&instance),
        // The box reaches no GitHub: its job comes from a local repository.
        extra_env: vec![("JANITOR_ALLOW_LOCAL_REPOS".into(), "true".into())],
        shared: vec![repos.path().to_path_buf()],
    });
    assert_eq!(started.0, 0, "{started:?}\n{}", b.journal("janitord"));
    assert_eq!(b.property("janitord", "ActiveState"), "active");

    let config = root.path().join("workers.yaml");
    std::fs::write(
        &config,
        format!(
            "repositories:\n  - {{name: tf-worker, organization: local, url: {}/tf-worker, gpu_required: false, timeout: 4m}}\n",
            repos.path().display()
        ),
    )
    .unwrap();
    let (code, out) = ctl(
        &fx,
        root.path(),
        &[
            "run",
            config.to_str().unwrap(),
            "--yes",
            "--no-wait",
            "--allow-local-repos",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cpu"), "routed to the cpu pool: {out}");
    let run_id = out
        .lines()
        .rev()
        .find(|l| l.len() > 16 && l.as_bytes()[8] == b'T')
        .unwrap_or_else(|| panic!("no run id in:\n{out}"))
        .trim()
        .to_string();
    let mut done = String::new();
    b.wait_until("the job's report", Duration::from_secs(180), || {
        let (code, out) = ctl(&fx, root.path(), &["status", &run_id]);
        done = out;
        code == 0 && done.contains("tf-worker: ✓ completed")
    });
    assert!(done.contains("Queue: 0 waiting, 0 in flight"), "{done}");
    let (code, shown) = ctl(&fx, root.path(), &["show", &run_id]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("✓ tf-worker: success"), "{shown}");
    let reports = fx
        .s3()
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(format!("janitor-reports/runs/{run_id}/"))
        .send()
        .await
        .unwrap();
    assert!(
        reports
            .contents()
            .iter()
            .any(|o| o.key().is_some_and(|k| k.ends_with("/report.json"))),
        "the report in Terraform's bucket"
    );
    drop(b);
    let (code, out) = ctl(
        &fx,
        root.path(),
        &["scale", "--pool", "cpu", "--desired", "0"],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(tf.destroy(&vars), made);
}

/// prod with every option (spot, Bedrock, the release role, alert and budget mail, commit
/// status links): applied, applied again with nothing to do, an empty plan; a changed setting
/// that reaches janitord's TOML makes a new launch template version and an instance refresh of
/// each group, and the plan after it is empty again; then everything is destroyed.
#[tokio::test(flavor = "multi_thread")]
async fn prod_with_every_option_applies_twice_plans_empty_refreshes_and_destroys() {
    let fx = Fixture::bare().await;
    let tf = Terraform::init(&fx);
    let every = r#"budget_email         = "ops@example.com"
alert_email          = "alerts@example.com"
agent_bedrock_models = ["anthropic.claude-sonnet-4-5-20250929-v1:0"]
github_repository    = "runpod-workers/janitor"
spot                 = true
spot_instance_types  = ["g5.2xlarge"]
"#;
    let vars = tf.vars(
        &fx,
        "prod",
        &format!("{every}status_target_url = \"https://janitor.example.com/runs/{{run_id}}\""),
    );
    let made = first_apply(&tf, &vars);
    assert!(
        tf.state().iter().any(|r| r == "aws_iam_role.release[0]")
            && tf
                .state()
                .iter()
                .any(|r| r == "aws_iam_role.agent_bedrock[0]"),
        "every option made its resources: {:?}",
        tf.state()
    );
    assert_eq!(tf.apply(&vars), NOTHING, "a second apply changes nothing");
    if let Some(plan) = tf.plan_changes(&vars) {
        panic!("the plan after two applies is not empty:\n{plan}");
    }
    assert!(fx.instance_refreshes().is_empty());

    let changed = tf.vars(
        &fx,
        "prod",
        &format!("{every}status_target_url = \"https://status.example.com/{{run_id}}/{{job_id}}\""),
    );
    let applied = tf.apply(&changed);
    assert_eq!((applied.added, applied.destroyed), (0, 0), "{applied:?}");
    let refreshed: Vec<String> = fx
        .instance_refreshes()
        .iter()
        .map(|r| r["group"].as_str().unwrap().to_string())
        .collect();
    let mut groups = refreshed.clone();
    groups.sort();
    assert_eq!(
        groups,
        [
            "janitor-prod-cpu",
            "janitor-prod-gpu-24",
            "janitor-prod-gpu-48"
        ],
        "one refresh per group"
    );
    if let Some(plan) = tf.plan_changes(&changed) {
        panic!("the plan after the change is not empty:\n{plan}");
    }
    assert_eq!(tf.destroy(&changed), made);
}
