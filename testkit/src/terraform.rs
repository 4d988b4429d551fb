//! `infra/terraform` applied for real, against the fixture's moto: a copy of the directory
//! with one override file (every AWS service's endpoint on the fixture, test credentials, a
//! local backend instead of the S3 one), the AWS provider from the machine's filesystem mirror
//! (no network), and the real `terraform` binary. Nothing of the configuration itself changes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Fixture;

/// Where a filesystem mirror of the AWS provider may be (as `infra/tests` looks).
const MIRRORS: &[&str] = &["/opt/tf-plugins", "/usr/share/terraform/plugins"];

/// The services `infra/terraform` uses, each pointed at the fixture.
const SERVICES: &[&str] = &[
    "autoscaling",
    "budgets",
    "cloudwatch",
    "ec2",
    "ecr",
    "iam",
    "logs",
    "s3",
    "sns",
    "sqs",
    "sts",
];

/// What one `apply` did, from its summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub added: u32,
    pub changed: u32,
    pub destroyed: u32,
}

/// An initialised copy of `infra/terraform`, its state local to it.
pub struct Terraform {
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    _work: tempfile::TempDir,
}

fn mirror() -> PathBuf {
    let given = std::env::var("JANITOR_TF_MIRROR").ok();
    given
        .iter()
        .map(String::as_str)
        .chain(MIRRORS.iter().copied())
        .map(PathBuf::from)
        .find(|m| m.join("registry.terraform.io").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no filesystem mirror of the AWS provider in {MIRRORS:?} (or JANITOR_TF_MIRROR): the Terraform apply tests need one"
            )
        })
}

impl Terraform {
    /// Copies `infra/terraform` (not its own tests), adds the override for `fx` and runs
    /// `terraform init` from the mirror.
    pub fn init(fx: &Fixture) -> Terraform {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("terraform");
        std::fs::create_dir_all(&dir).unwrap();
        let source = crate::workspace_root().join("infra/terraform");
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "tf") {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        let endpoints: String = SERVICES
            .iter()
            .map(|s| format!("    {s} = \"{}\"\n", fx.endpoint))
            .collect();
        std::fs::write(
            dir.join("moto_override.tf"),
            format!(
                "# The test's only change: AWS is the fixture's moto, the state local.\nterraform {{\n  backend \"local\" {{}}\n}}\n\nprovider \"aws\" {{\n  access_key                  = \"testing\"\n  secret_key                  = \"testing\"\n  skip_credentials_validation = true\n  skip_metadata_api_check     = true\n  s3_use_path_style           = true\n  endpoints {{\n{endpoints}  }}\n}}\n"
            ),
        )
        .unwrap();
        let rc = work.path().join("terraformrc");
        std::fs::write(
            &rc,
            format!(
                "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"registry.terraform.io/*/*\"]\n  }}\n  direct {{\n    exclude = [\"registry.terraform.io/*/*\"]\n  }}\n}}\n",
                mirror().display()
            ),
        )
        .unwrap();
        let env = vec![
            ("TF_CLI_CONFIG_FILE".to_string(), rc.display().to_string()),
            ("TF_IN_AUTOMATION".to_string(), "1".to_string()),
            (
                "TF_DATA_DIR".to_string(),
                work.path().join("data").display().to_string(),
            ),
        ];
        let tf = Terraform {
            dir,
            env,
            _work: work,
        };
        tf.run(&["init", "-input=false", "-no-color"]);
        tf
    }

    /// `terraform ARGS` in the copy; its output. Panics with the output when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let (code, out) = self.status(args);
        assert_eq!(code, 0, "terraform {args:?} failed:\n{out}");
        out
    }

    /// `terraform ARGS`: the exit code and the output.
    pub fn status(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new("terraform")
            .args(args)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap_or_else(|e| panic!("cannot run terraform (is it installed?): {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// `-var-file` arguments: `infra/env/<env>.tfvars`, then one written here with moto's VPC,
    /// subnets and AMI and the `extra` HCL lines.
    pub fn vars(&self, fx: &Fixture, env: &str, extra: &str) -> Vec<String> {
        let d = fx.ec2_defaults();
        let file = self.dir.join(format!("moto-{env}.tfvars"));
        std::fs::write(
            &file,
            format!(
                "vpc_id     = {}\nsubnet_ids = {}\nami_id     = {}\n{extra}\n",
                d["vpc_id"], d["subnet_ids"], d["ami_id"]
            ),
        )
        .unwrap();
        let tfvars: &Path = &crate::workspace_root().join(format!("infra/env/{env}.tfvars"));
        vec![
            format!("-var-file={}", tfvars.display()),
            format!("-var-file={}", file.display()),
        ]
    }

    fn with<'a>(args: &[&'a str], vars: &'a [String]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(vars.iter().map(String::as_str));
        all
    }

    /// `terraform apply -auto-approve`, and what it did.
    pub fn apply(&self, vars: &[String]) -> Applied {
        let out = self.run(&Self::with(
            &["apply", "-auto-approve", "-input=false", "-no-color"],
            vars,
        ));
        let line = out
            .lines()
            .find(|l| l.starts_with("Apply complete!"))
            .unwrap_or_else(|| panic!("no summary in:\n{out}"));
        let n = |word: &str| -> u32 {
            let before = line.split(&format!(" {word}")).next().unwrap_or("");
            before
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("`{word}` in {line}"))
        };
        Applied {
            added: n("added"),
            changed: n("changed"),
            destroyed: n("destroyed"),
        }
    }

    /// `terraform plan -detailed-exitcode`: `None` when it plans no change, else the plan.
    pub fn plan_changes(&self, vars: &[String]) -> Option<String> {
        let (code, out) = self.status(&Self::with(
            &["plan", "-detailed-exitcode", "-input=false", "-no-color"],
            vars,
        ));
        match code {
            0 => None,
            2 => Some(out),
            _ => panic!("terraform plan failed:\n{out}"),
        }
    }

    /// What `make destroy` does: the ledger bucket told it may go with its reports
    /// (`ledger_force_destroy`, a targeted apply), then `terraform destroy`; how many
    /// resources it destroyed.
    pub fn destroy(&self, vars: &[String]) -> u32 {
        let mut vars = vars.to_vec();
        vars.push("-var=ledger_force_destroy=true".to_string());
        self.run(&Self::with(
            &[
                "apply",
                "-auto-approve",
                "-input=false",
                "-no-color",
                "-target=aws_s3_bucket.ledger",
            ],
            &vars,
        ));
        let out = self.run(&Self::with(
            &["destroy", "-auto-approve", "-input=false", "-no-color"],
            &vars,
        ));
        out.lines()
            .find_map(|l| l.strip_prefix("Destroy complete! Resources: "))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no summary in:\n{out}"))
    }

    /// `terraform output -json`: what `make infra-apply` writes to `infra/env/<ENV>.json`.
    pub fn outputs(&self) -> serde_json::Value {
        serde_json::from_str(&self.run(&["output", "-json", "-no-color"])).unwrap()
    }

    /// A resource's attributes in the state (`terraform show -json`), by its address
    /// (`aws_launch_template.pool["cpu"]`).
    pub fn resource(&self, address: &str) -> serde_json::Value {
        let shown: serde_json::Value =
            serde_json::from_str(&self.run(&["show", "-json", "-no-color"])).unwrap();
        shown["values"]["root_module"]["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["address"] == address)
            .map(|r| r["values"].clone())
            .unwrap_or_else(|| panic!("no {address} in the state"))
    }

    /// The resources in the state.
    pub fn state(&self) -> Vec<String> {
        self.run(&["state", "list", "-no-color"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The janitord.toml a launch template's user data writes: the lines between `<<'TOML'` and
/// `TOML`, exactly as the instance's shell writes them.
pub fn janitord_toml(user_data: &str) -> String {
    let start = user_data
        .find("<<'TOML'\n")
        .unwrap_or_else(|| panic!("no janitord.toml in the user data:\n{user_data}"))
        + "<<'TOML'\n".len();
    let body = &user_data[start..];
    let end = body
        .lines()
        .position(|l| l.trim() == "TOML")
        .unwrap_or_else(|| panic!("the janitord.toml heredoc does not end:\n{user_data}"));
    body.lines().take(end).collect::<Vec<_>>().join("\n") + "\n"
}
