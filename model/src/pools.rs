//! Pools of instances (one queue and one Auto Scaling group each) and the rule that sends
//! each repository to one: its `pool:` or `instance_type:`, else CPU when it needs no GPU,
//! else the smallest GPU pool whose memory fits what its tests' GPU ids name.

use serde::{Deserialize, Serialize};

use crate::config::JobSpec;
use crate::runpod;

/// The pools Terraform creates by default (`infra/terraform/variables.tf`, `pools`):
/// (name, instance type, GPU memory in GB per GPU, 0 for none).
pub const DEFAULT_POOLS: &[(&str, &str, u32)] = &[
    ("cpu", "c7i.xlarge", 0),
    ("gpu-24", "g5.xlarge", 24),
    ("gpu-48", "g6e.xlarge", 48),
];

/// A pool as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolShape {
    pub name: String,
    pub instance_type: String,
    /// Memory of one GPU in GB; 0: no GPU. `None`: not known (a single pool given by the
    /// older `queue_url`/`asg_name` settings), which takes every job.
    pub gpu_memory_gb: Option<u32>,
}

impl PoolShape {
    fn has_gpu(&self) -> bool {
        self.gpu_memory_gb != Some(0)
    }

    fn describe(&self) -> String {
        match self.gpu_memory_gb {
            Some(0) => format!("{} ({}, no GPU)", self.name, self.instance_type),
            Some(gb) => format!("{} ({}, {gb} GB GPU)", self.name, self.instance_type),
            None => format!("{} ({})", self.name, self.instance_type),
        }
    }
}

/// The default pools, as shapes.
pub fn default_pools() -> Vec<PoolShape> {
    DEFAULT_POOLS
        .iter()
        .map(|(n, t, gb)| PoolShape {
            name: n.to_string(),
            instance_type: t.to_string(),
            gpu_memory_gb: Some(*gb),
        })
        .collect()
}

/// What the repository's own files say about where it runs, read before it is enqueued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints {
    /// GPU pool or type ids (`.runpod/tests.json` `config.gpuTypeId`, `.github/tests.json`
    /// `endpointConfig.gpuIds`, `.runpod/hub.json` `config.gpuIds`), with the file they came from.
    pub gpu_ids: Vec<(String, String)>,
    /// `.runpod/hub.json` says `"runsOn": "CPU"`.
    pub runs_on_cpu: bool,
    /// Why the files could not be read, when they could not (routing then goes by the config).
    pub unread: Option<String>,
}

impl Hints {
    /// The hints in a repository's files, from their texts (`(path, text)`); a file that
    /// does not parse is named in `unread` and otherwise ignored (the preflight says more).
    pub fn from_files(files: &[(String, String)]) -> Hints {
        let mut h = Hints::default();
        let mut problems = Vec::new();
        for (path, text) in files {
            let ids = match path.as_str() {
                runpod::HUB_FILE => runpod::parse_hub(path, text).map(|hub| {
                    h.runs_on_cpu |= runpod::hub_runs_on_cpu(text);
                    hub.gpu_ids
                }),
                runpod::HUB_TESTS => runpod::parse_tests(path, text).map(|t| t.config.gpu_ids),
                runpod::RUNNER_TESTS => {
                    runpod::parse_runner_tests(path, text).map(|t| t.config.gpu_ids)
                }
                _ => continue,
            };
            match ids {
                Ok(ids) => h
                    .gpu_ids
                    .extend(ids.into_iter().map(|id| (id, path.clone()))),
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            // A parse error may quote the file: no control character reaches a terminal.
            let text = problems.join("; ");
            h.unread = Some(
                text.chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect(),
            );
        }
        h
    }
}

/// Where a repository runs and why, in a sentence a maintainer can check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub pool: String,
    pub why: String,
}

/// The GPU memory the ids need: the most any file asks (each file's ids are alternatives,
/// any of which would do, so a file needs the least of its ids).
fn needed(hints: &Hints) -> Option<(u32, String, String)> {
    let mut files: Vec<&str> = hints.gpu_ids.iter().map(|(_, f)| f.as_str()).collect();
    files.dedup();
    files
        .into_iter()
        .filter_map(|f| {
            let ids: Vec<String> = hints
                .gpu_ids
                .iter()
                .filter(|(_, g)| g == f)
                .map(|(id, _)| id.clone())
                .collect();
            runpod::needed_gpu(&ids).map(|(gb, id)| (gb, id, f.to_string()))
        })
        .max()
}

/// Chooses the pool of `spec`. `pools` in any order; the smallest fitting GPU pool wins
/// (by memory, then by name). `Err` says why no pool fits and what would.
pub fn route(spec: &JobSpec, hints: &Hints, pools: &[PoolShape]) -> Result<Routed, String> {
    let names = || {
        pools
            .iter()
            .map(PoolShape::describe)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if pools.is_empty() {
        return Err("no pool is configured".to_string());
    }
    if let Some(p) = &spec.pool {
        return match pools.iter().find(|s| &s.name == p) {
            Some(s) => Ok(Routed {
                pool: s.name.clone(),
                why: "its `pool:`".to_string(),
            }),
            None => Err(format!(
                "pool: `{p}` is not a pool of this fleet; the pools are {}",
                names()
            )),
        };
    }
    if let Some(t) = &spec.instance_type {
        let mut fits: Vec<&PoolShape> = pools.iter().filter(|s| &s.instance_type == t).collect();
        fits.sort_by(|a, b| a.name.cmp(&b.name));
        return match fits.first() {
            Some(s) => Ok(Routed {
                pool: s.name.clone(),
                why: format!("its `instance_type: {t}`"),
            }),
            None => Err(format!(
                "instance_type: no pool runs `{t}`; the pools are {}: set `pool:` instead, or add a pool with that type to Terraform's `pools`",
                names()
            )),
        };
    }
    // One pool of unknown shape (the single-queue settings): everything goes there.
    if let [only] = pools {
        if only.gpu_memory_gb.is_none() {
            return Ok(Routed {
                pool: only.name.clone(),
                why: "the only pool".to_string(),
            });
        }
    }
    let mut gpu: Vec<&PoolShape> = pools.iter().filter(|s| s.has_gpu()).collect();
    gpu.sort_by(|a, b| {
        a.gpu_memory_gb
            .unwrap_or(u32::MAX)
            .cmp(&b.gpu_memory_gb.unwrap_or(u32::MAX))
            .then_with(|| a.name.cmp(&b.name))
    });
    let cpu = pools
        .iter()
        .filter(|s| !s.has_gpu())
        .min_by(|a, b| a.name.cmp(&b.name));
    let no_gpu_why = if !spec.gpu_required {
        Some("`gpu_required: false`")
    } else if hints.runs_on_cpu {
        Some("`.runpod/hub.json` says `runsOn: CPU`")
    } else {
        None
    };
    if let Some(why) = no_gpu_why {
        return match (cpu, gpu.first()) {
            (Some(c), _) => Ok(Routed {
                pool: c.name.clone(),
                why: why.to_string(),
            }),
            (None, Some(g)) => Ok(Routed {
                pool: g.name.clone(),
                why: format!("{why}, but there is no CPU pool: the smallest GPU pool"),
            }),
            (None, None) => Err("no pool".to_string()),
        };
    }
    let Some(smallest) = gpu.first() else {
        return Err(format!(
            "it needs a GPU and no pool has one; the pools are {}: set `gpu_required: false` if it needs none",
            names()
        ));
    };
    let Some((gb, id, file)) = needed(hints) else {
        // Unknown ids are counted, never echoed: they are the repository's text.
        let why = match (&hints.unread, hints.gpu_ids.len()) {
            (Some(e), _) => format!("its GPU ids could not be read ({e}): the smallest GPU pool"),
            (None, 0) => "no GPU id in its files: the smallest GPU pool".to_string(),
            (None, n) => format!(
                "none of its {n} GPU id(s) is a RunPod GPU pool or type this fleet knows: the smallest GPU pool"
            ),
        };
        return Ok(Routed {
            pool: smallest.name.clone(),
            why,
        });
    };
    match gpu
        .iter()
        .find(|s| s.gpu_memory_gb.is_none_or(|m| m >= gb))
    {
        Some(s) => Ok(Routed {
            pool: s.name.clone(),
            why: format!("`{id}` in {file} needs a {gb} GB GPU"),
        }),
        None => Err(format!(
            "`{id}` in {file} needs a {gb} GB GPU and no pool has one (the pools are {}): add a pool with such a GPU to Terraform's `pools`, or set `pool:` to run it on a smaller one",
            names()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepoRef;
    use std::time::Duration;

    fn spec() -> JobSpec {
        JobSpec::new(
            RepoRef {
                organization: "runpod-workers".into(),
                name: "w".into(),
                url: None,
                git_ref: None,
            },
            Duration::from_secs(60),
        )
    }

    fn ids(list: &[(&str, &str)]) -> Hints {
        Hints {
            gpu_ids: list
                .iter()
                .map(|(i, f)| (i.to_string(), f.to_string()))
                .collect(),
            ..Hints::default()
        }
    }

    #[test]
    fn routing_table() {
        let pools = default_pools();
        let tests = runpod::HUB_TESTS;
        let hub = runpod::HUB_FILE;
        // (pool:, instance_type:, gpu_required, hints) -> Ok(pool) or Err(start of message)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            bool,
            Hints,
            Result<&'a str, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (None, None, true, Hints::default(), Ok("gpu-24")),
            (None, None, false, Hints::default(), Ok("cpu")),
            (Some("gpu-48"), None, false, Hints::default(), Ok("gpu-48")),
            (
                Some("gpu-80"),
                None,
                true,
                Hints::default(),
                Err("pool: `gpu-80` is not a pool"),
            ),
            (
                None,
                Some("g6e.xlarge"),
                true,
                Hints::default(),
                Ok("gpu-48"),
            ),
            (None, Some("c7i.xlarge"), true, Hints::default(), Ok("cpu")),
            (
                None,
                Some("p5.48xlarge"),
                true,
                Hints::default(),
                Err("instance_type: no pool runs `p5.48xlarge`"),
            ),
            (
                None,
                None,
                true,
                Hints {
                    runs_on_cpu: true,
                    ..Hints::default()
                },
                Ok("cpu"),
            ),
            (None, None, true, ids(&[("AMPERE_16", tests)]), Ok("gpu-24")),
            (None, None, true, ids(&[("ADA_24", tests)]), Ok("gpu-24")),
            (
                None,
                None,
                true,
                ids(&[("ADA_32_PRO", tests)]),
                Ok("gpu-48"),
            ),
            (
                None,
                None,
                true,
                ids(&[("ADA_48_PRO", tests), ("AMPERE_48", tests)]),
                Ok("gpu-48"),
            ),
            // Alternatives in one file: any would do, so the least.
            (
                None,
                None,
                true,
                ids(&[("AMPERE_80", tests), ("AMPERE_24", tests)]),
                Ok("gpu-24"),
            ),
            // Two files: the more demanding one.
            (
                None,
                None,
                true,
                ids(&[("AMPERE_16", hub), ("NVIDIA L40S", tests)]),
                Ok("gpu-48"),
            ),
            (
                None,
                None,
                true,
                ids(&[("AMPERE_80", tests)]),
                Err("`AMPERE_80` in .runpod/tests.json needs a 80 GB GPU and no pool has one"),
            ),
            (
                None,
                None,
                true,
                ids(&[("SOMETHING_NEW", tests)]),
                Ok("gpu-24"),
            ),
            // The explicit fields win over the files.
            (
                Some("cpu"),
                None,
                true,
                ids(&[("AMPERE_80", tests)]),
                Ok("cpu"),
            ),
        ];
        for (i, (pool, itype, gpu, hints, want)) in cases.into_iter().enumerate() {
            let mut s = spec();
            s.pool = pool.map(str::to_string);
            s.instance_type = itype.map(str::to_string);
            s.gpu_required = gpu;
            let got = route(&s, &hints, &pools);
            match (got, want) {
                (Ok(r), Ok(p)) => assert_eq!(r.pool, p, "case {i}: {}", r.why),
                (Err(e), Err(start)) => assert!(e.starts_with(start), "case {i}: {e}"),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_reason_names_the_id_and_the_file() {
        let r = route(
            &spec(),
            &ids(&[("ADA_48_PRO", runpod::HUB_TESTS)]),
            &default_pools(),
        )
        .unwrap();
        assert_eq!(
            r.why,
            "`ADA_48_PRO` in .runpod/tests.json needs a 48 GB GPU"
        );
    }

    #[test]
    fn one_pool_of_unknown_shape_takes_everything_and_no_cpu_pool_falls_back() {
        let one = [PoolShape {
            name: "default".into(),
            instance_type: "g5.xlarge".into(),
            gpu_memory_gb: None,
        }];
        let mut s = spec();
        s.gpu_required = false;
        assert_eq!(
            route(&s, &ids(&[("AMPERE_80", "x")]), &one).unwrap().pool,
            "default"
        );
        let gpus: Vec<PoolShape> = default_pools().into_iter().skip(1).collect();
        let r = route(&s, &Hints::default(), &gpus).unwrap();
        assert_eq!(r.pool, "gpu-24");
        assert!(r.why.contains("no CPU pool"), "{}", r.why);
    }

    #[test]
    fn hints_come_from_the_files_and_a_bad_file_is_named() {
        let h = Hints::from_files(&[
            (
                runpod::HUB_FILE.into(),
                r#"{"config": {"runsOn": "CPU", "gpuIds": "ADA_24"}}"#.into(),
            ),
            (runpod::HUB_TESTS.into(), "{not json".into()),
        ]);
        assert!(h.runs_on_cpu);
        assert_eq!(
            h.gpu_ids,
            [("ADA_24".to_string(), runpod::HUB_FILE.to_string())]
        );
        assert!(
            h.unread
                .as_deref()
                .unwrap_or("")
                .starts_with(".runpod/tests.json: not valid JSON"),
            "{:?}",
            h.unread
        );
    }
}
