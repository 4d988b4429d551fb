//! Who may see a job secret: the agent, the build, the worker or the publisher. Pure: the
//! table follows from where the operator's config names the secret, never from anything the
//! repository contains.

use crate::config::JobSpec;

/// The name of the token that publishes fixes; it goes to the publisher only.
pub const PUBLISH_TOKEN: &str = "GITHUB_TOKEN";

/// A place a secret's value may be given to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The agent container's environment.
    Agent,
    /// A BuildKit secret mount (`build_secrets:`).
    Build,
    /// The worker's environment (`env: {KEY: secret:NAME}` in the config).
    Worker,
    /// Pushing the fix and opening its pull request.
    Publish,
}

/// The audiences of the job's secret `name`:
/// - `GITHUB_TOKEN` publishes, and is given to nothing else;
/// - a secret named in `build_secrets` goes to the build; one named by the config's `env:`
///   (`secret:NAME`) goes to the worker;
/// - a secret the config names only under `secrets:` is the agent's (its model key).
///
/// A name the job's `secrets:` do not list has no audience.
pub fn audiences(name: &str, spec: &JobSpec) -> Vec<Audience> {
    if !spec.secrets.iter().any(|(n, _)| n == name) {
        return Vec::new();
    }
    if name == PUBLISH_TOKEN {
        return vec![Audience::Publish];
    }
    let mut out = Vec::new();
    if spec.build.secrets.iter().any(|s| s == name) {
        out.push(Audience::Build);
    }
    if spec
        .env
        .iter()
        .any(|(_, v)| v.strip_prefix("secret:") == Some(name))
    {
        out.push(Audience::Worker);
    }
    if out.is_empty() {
        out.push(Audience::Agent);
    }
    out
}

/// Whether the job's secret `name` may be given to `to`.
pub fn may_see(name: &str, spec: &JobSpec, to: Audience) -> bool {
    audiences(name, spec).contains(&to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Audience::*;

    fn spec() -> JobSpec {
        let repo = crate::config::RepoRef {
            organization: "o".into(),
            name: "w".into(),
            url: None,
            git_ref: None,
        };
        let mut s = JobSpec::new(repo, std::time::Duration::from_secs(60));
        s.secrets = [
            "GITHUB_TOKEN",
            "ANTHROPIC_API_KEY",
            "HF_TOKEN",
            "DB_URL",
            "BOTH",
        ]
        .iter()
        .map(|n| (n.to_string(), format!("ssm:/janitor/{n}")))
        .collect();
        s.build.secrets = vec!["HF_TOKEN".into(), "BOTH".into(), "GITHUB_TOKEN".into()];
        s.env = vec![
            ("DATABASE_URL".into(), "secret:DB_URL".into()),
            ("B".into(), "secret:BOTH".into()),
            ("T".into(), "secret:GITHUB_TOKEN".into()),
        ];
        s
    }

    #[test]
    fn the_table() {
        let s = spec();
        for (name, want) in [
            ("GITHUB_TOKEN", vec![Publish]),
            ("ANTHROPIC_API_KEY", vec![Agent]),
            ("HF_TOKEN", vec![Build]),
            ("DB_URL", vec![Worker]),
            ("BOTH", vec![Build, Worker]),
            ("UNLISTED", vec![]),
        ] {
            assert_eq!(audiences(name, &s), want, "{name}");
        }
        assert!(!may_see("GITHUB_TOKEN", &s, Agent));
        assert!(!may_see("GITHUB_TOKEN", &s, Build));
        assert!(!may_see("GITHUB_TOKEN", &s, Worker));
    }
}
