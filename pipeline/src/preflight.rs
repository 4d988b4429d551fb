//! The `preflight` step, before anything is built: the worker's CUDA requirement (its tests'
//! or hub's `allowedCudaVersions`, or its base image's `NVIDIA_REQUIRE_CUDA`/`CUDA_VERSION`)
//! against this instance's driver, its `containerDiskInGb` against the free disk, and its
//! required environment. A mismatch is not the repository's fault: the step ends `error` with
//! a sentence a maintainer understands.

use crate::discover::Discovered;
use janitor_model::runpod;

const GB: u64 = 1_000_000_000;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What the checks look at.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub gpu_required: bool,
    /// The CUDA version this instance's driver supports (NVML), `None` without NVML.
    pub driver_cuda: Option<String>,
    /// The final base image of the Dockerfile and its environment, when it is on the instance.
    pub base_image: Option<(String, Vec<String>)>,
    pub free_bytes: Option<u64>,
    pub disk_path: String,
    /// This instance's GPU (NVML): its name and memory, the smallest of its devices; `None`
    /// without NVML.
    pub gpu: Option<(String, u64)>,
    /// How many GPUs NVML sees.
    pub gpu_count: Option<u32>,
    pub instance_type: String,
}

/// The share of a GPU class's nominal memory (decimal GB, as RunPod names classes) a device
/// must report to count as that class: NVML reports what the driver can use, a little under
/// the label (an A10G's "24 GB" is 23,028 MiB).
const GPU_MEMORY_SLACK: f64 = 0.94;

/// The CUDA version an image needs, from its environment: `NVIDIA_REQUIRE_CUDA=cuda>=12.4 …`,
/// else `CUDA_VERSION=12.4.1`.
pub fn image_cuda(env: &[String]) -> Option<(u32, u32)> {
    let var = |name: &str| {
        env.iter()
            .find_map(|e| e.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
    };
    var("NVIDIA_REQUIRE_CUDA")
        .and_then(|req| {
            req.split_whitespace()
                .find_map(|t| t.strip_prefix("cuda>="))
                .and_then(runpod::cuda_version)
        })
        .or_else(|| var("CUDA_VERSION").and_then(runpod::cuda_version))
}

/// Whether the driver runs what needs CUDA `needed` (`what` says who needs it). No driver
/// figure (no NVML) is not a mismatch: it is said in the step's detail.
pub fn cuda_fits(needed: (u32, u32), what: &str, driver: Option<&str>) -> Result<String, String> {
    let need = format!("{}.{}", needed.0, needed.1);
    match driver.and_then(|d| runpod::cuda_version(d).map(|v| (d, v))) {
        None => Ok(format!("{what} needs CUDA {need}; the driver's CUDA version is unknown (no NVML)")),
        Some((d, have)) if have >= needed => Ok(format!("{what} needs CUDA {need}; the driver supports {d}")),
        Some((d, _)) => Err(format!(
            "{what} needs CUDA {need}; this instance's driver supports {d}: run it on an AMI with a newer NVIDIA driver"
        )),
    }
}

/// The image the Dockerfile's last stage starts from, following stage names; `None` when it
/// uses a build argument or cannot be read.
pub fn base_image(dockerfile: &str) -> Option<String> {
    let mut stages: Vec<(Option<String>, String)> = Vec::new();
    for line in dockerfile.lines() {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        let image = rest.first()?.to_string();
        let alias = match rest.get(1) {
            Some(kw) if kw.eq_ignore_ascii_case("AS") => {
                rest.get(2).map(|a| a.to_ascii_lowercase())
            }
            _ => None,
        };
        stages.push((alias, image));
    }
    let mut image = stages.last()?.1.clone();
    // `FROM builder` names an earlier stage: follow it back (at most once per stage).
    for _ in 0..stages.len() {
        let lower = image.to_ascii_lowercase();
        match stages
            .iter()
            .find(|(a, _)| a.as_deref() == Some(lower.as_str()))
        {
            Some((_, from)) => image = from.clone(),
            None => break,
        }
    }
    (!image.contains('$') && image != "scratch").then_some(image)
}

/// Runs the checks. `Ok` is the step's detail; `Err` the first mismatch.
pub fn check(d: &Discovered, f: &Facts) -> Result<String, String> {
    let mut said = vec![format!(
        "tests from {}; Dockerfile {}",
        d.source, d.dockerfile
    )];
    if let Some(missing) = d.missing_env.first() {
        return Err(format!(
            "the worker needs the environment variable {missing}"
        ));
    }
    if f.gpu_required {
        if let Some(said_cuda) = allowed_cuda(&d.allowed_cuda, f.driver_cuda.as_deref())? {
            said.push(said_cuda);
        }
        if let Some((image, env)) = &f.base_image {
            if let Some(v) = image_cuda(env) {
                said.push(cuda_fits(
                    v,
                    &format!("the base image {image}"),
                    f.driver_cuda.as_deref(),
                )?);
            }
        }
    }
    if f.gpu_required {
        if let Some(said_gpu) = gpu_class(d, f)? {
            said.push(said_gpu);
        }
    }
    if let Some(gb) = d.container_disk_gb {
        match f.free_bytes {
            Some(free) if free < gb.saturating_mul(GB) => {
                return Err(format!(
                    "the worker needs {gb} GB of disk (containerDiskInGb in {}); {:.1} GiB are free on {}",
                    d.container_disk_from,
                    free as f64 / GIB,
                    f.disk_path
                ))
            }
            Some(free) => said.push(format!("{gb} GB of disk needed, {:.1} GiB free", free as f64 / GIB)),
            None => said.push(format!("{gb} GB of disk needed; the free space is unknown")),
        }
    }
    Ok(said.join("; "))
}

/// `allowedCudaVersions` as RunPod reads it: the set of host CUDA versions (the driver's, as
/// `nvidia-smi` shows it) a worker may be placed on. RunPod never places the worker on a host
/// outside the set; an instance is fixed, so here the set is satisfied when the driver's
/// version is in it, and also when it is newer than every entry (a driver runs what older CUDA
/// builds, so the worker runs, though RunPod would not place it there: said). A driver older
/// than every entry, or in a gap of the set, is a mismatch (`error`): the worker was never
/// meant for it.
fn allowed_cuda(allowed: &[String], driver: Option<&str>) -> Result<Option<String>, String> {
    let mut set: Vec<(u32, u32)> = allowed
        .iter()
        .filter_map(|v| runpod::cuda_version(v))
        .collect();
    if set.is_empty() {
        return Ok(None);
    }
    set.sort_unstable();
    set.dedup();
    let listed = set
        .iter()
        .map(|(a, b)| format!("{a}.{b}"))
        .collect::<Vec<_>>()
        .join(", ");
    let Some((d, have)) = driver.and_then(|d| runpod::cuda_version(d).map(|v| (d, v))) else {
        return Ok(Some(format!(
            "allowedCudaVersions {listed}; the driver's CUDA version is unknown (no NVML)"
        )));
    };
    let newest = set.last().copied().unwrap_or_default();
    if set.contains(&have) {
        Ok(Some(format!(
            "the driver's CUDA {d} is one of allowedCudaVersions {listed}"
        )))
    } else if have > newest {
        Ok(Some(format!(
            "the driver's CUDA {d} is newer than allowedCudaVersions {listed}: RunPod would not place the worker on this host, but the driver runs what they build"
        )))
    } else {
        Err(format!(
            "the worker allows CUDA {listed} (allowedCudaVersions); this instance's driver supports {d}, which RunPod would never run it on: run it on an AMI with a driver for one of them"
        ))
    }
}

/// The tests' GPU class against this instance's GPU: a repository whose tests need more memory
/// than this instance has is the instance's mismatch (`error`), said plainly, never an OOM.
fn gpu_class(d: &Discovered, f: &Facts) -> Result<Option<String>, String> {
    let (ids, from) = &d.gpu_ids;
    let count = match (d.gpu_count, f.gpu_count) {
        (Some(n), Some(have)) if n > u64::from(have) => {
            return Err(format!(
                "{from} asks for {n} GPUs (gpuCount); this {} has {have}: run it on a pool with more GPUs",
                f.instance_type
            ))
        }
        (Some(n), Some(have)) => format!("; gpuCount {n}: the worker sees {n} of this instance's {have} GPUs"),
        (Some(n), None) => format!("; gpuCount {n}: the worker is given {n} GPU(s); this instance's GPU count is unknown (no NVML)"),
        (None, _) => String::new(),
    };
    let Some((need_gb, id)) = runpod::needed_gpu(ids) else {
        return Ok((!count.is_empty()).then(|| count.trim_start_matches("; ").to_string()));
    };
    match &f.gpu {
        None => Ok(Some(format!(
            "{from} asks for a {need_gb} GB GPU ({id}); this instance's GPU memory is unknown (no NVML){count}"
        ))),
        Some((name, mib)) => {
            let have = *mib as f64 * 1024.0 * 1024.0;
            let need = f64::from(need_gb) * 1e9 * GPU_MEMORY_SLACK;
            let gib = *mib as f64 / 1024.0;
            if have < need {
                Err(format!(
                    "{from} asks for a {need_gb} GB GPU ({id}); this {} has an {name} with {gib:.1} GiB: run it on a pool with a larger GPU",
                    f.instance_type
                ))
            } else {
                Ok(Some(format!(
                    "{from} asks for a {need_gb} GB GPU ({id}); this {name} has {gib:.1} GiB{count}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::Plan;

    fn discovered() -> Discovered {
        Discovered {
            dockerfile: "Dockerfile".into(),
            source: ".runpod/tests.json".into(),
            plan: Plan::RunToExit,
            env: Vec::new(),
            missing_env: Vec::new(),
            allowed_cuda: vec!["13.0".into(), "12.8".into()],
            container_disk_gb: Some(20),
            notes: Vec::new(),
            gpu_ids: (Vec::new(), String::new()),
            gpu_count: None,
            container_disk_from: runpod::HUB_FILE.into(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn the_tests_gpu_class_against_this_instance() {
        let mut d = discovered();
        d.allowed_cuda.clear();
        d.container_disk_gb = None;
        d.gpu_ids = (vec!["ADA_48_PRO".into()], ".runpod/tests.json".into());
        let mut f = Facts {
            gpu_required: true,
            gpu: Some(("NVIDIA A10G".into(), 23_028)),
            gpu_count: Some(1),
            instance_type: "g5.xlarge".into(),
            ..Facts::default()
        };
        assert_eq!(
            check(&d, &f).unwrap_err(),
            ".runpod/tests.json asks for a 48 GB GPU (ADA_48_PRO); this g5.xlarge has an NVIDIA A10G with 22.5 GiB: run it on a pool with a larger GPU"
        );
        // A 24 GB class fits the A10G's 23,028 MiB.
        d.gpu_ids.0 = vec!["AMPERE_24".into()];
        assert!(check(&d, &f)
            .unwrap()
            .contains("asks for a 24 GB GPU (AMPERE_24); this NVIDIA A10G has 22.5 GiB"));
        // An L40S (46,068 MiB) is a 48 GB class.
        d.gpu_ids.0 = vec!["ADA_48_PRO".into()];
        f.gpu = Some(("NVIDIA L40S".into(), 46_068));
        assert!(check(&d, &f).is_ok());
        // No NVML: recorded, not guessed; gpuCount said.
        f.gpu = None;
        f.gpu_count = None;
        d.gpu_count = Some(1);
        let said = check(&d, &f).unwrap();
        assert!(said.contains("this instance's GPU memory is unknown (no NVML); gpuCount 1: the worker is given 1 GPU(s); this instance's GPU count is unknown (no NVML)"), "{said}");
        // More GPUs than the instance has: said, not an engine error.
        f.gpu_count = Some(1);
        d.gpu_count = Some(2);
        assert_eq!(
            check(&d, &f).unwrap_err(),
            ".runpod/tests.json asks for 2 GPUs (gpuCount); this g5.xlarge has 1: run it on a pool with more GPUs"
        );
    }

    #[test]
    fn allowed_cuda_versions_are_a_set() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let allowed = set(&["12.4", "12.1", "12.8"]);
        assert!(allowed_cuda(&allowed, Some("12.4"))
            .unwrap()
            .unwrap()
            .contains("is one of allowedCudaVersions 12.1, 12.4, 12.8"));
        // Newer than every entry: runs, and RunPod's placement is said.
        assert!(allowed_cuda(&allowed, Some("13.0"))
            .unwrap()
            .unwrap()
            .contains("RunPod would not place the worker on this host"));
        // In a gap, or older than all: never a host RunPod would use.
        assert!(allowed_cuda(&allowed, Some("12.2")).is_err());
        assert!(allowed_cuda(&allowed, Some("11.8"))
            .unwrap_err()
            .contains("this instance's driver supports 11.8"));
        assert!(allowed_cuda(&allowed, None)
            .unwrap()
            .unwrap()
            .contains("unknown (no NVML)"));
        assert_eq!(allowed_cuda(&[], Some("12.4")), Ok(None));
    }

    #[test]
    fn cuda_requirements() {
        let env = |s: &str| vec!["PATH=/bin".to_string(), s.to_string()];
        assert_eq!(
            image_cuda(&env(
                "NVIDIA_REQUIRE_CUDA=cuda>=12.4 brand=tesla,driver>=470,driver<471"
            )),
            Some((12, 4))
        );
        assert_eq!(image_cuda(&env("CUDA_VERSION=12.1.1")), Some((12, 1)));
        assert_eq!(image_cuda(&env("X=1")), None);
        let e = cuda_fits((13, 0), "the image", Some("12.4")).unwrap_err();
        assert!(
            e.starts_with("the image needs CUDA 13.0; this instance's driver supports 12.4"),
            "{e}"
        );
        assert!(cuda_fits((12, 4), "the image", Some("13.0")).is_ok());
        assert!(cuda_fits((12, 4), "the image", None)
            .unwrap()
            .contains("unknown"));
    }

    #[test]
    fn base_images() {
        assert_eq!(
            base_image("FROM python:3.10-slim\nRUN x").as_deref(),
            Some("python:3.10-slim")
        );
        let multi = "FROM nvidia/cuda:12.4.1-devel AS build\nRUN make\nFROM --platform=linux/amd64 build AS final\n";
        assert_eq!(
            base_image(multi).as_deref(),
            Some("nvidia/cuda:12.4.1-devel")
        );
        assert_eq!(base_image("ARG BASE\nFROM $BASE"), None);
        assert_eq!(base_image("RUN x"), None);
    }

    #[test]
    fn checks() {
        let d = discovered();
        let mut f = Facts {
            gpu_required: true,
            driver_cuda: Some("12.4".into()),
            free_bytes: Some(100 * GB),
            disk_path: "/var/lib/janitor".into(),
            ..Facts::default()
        };
        let e = check(&d, &f).unwrap_err();
        assert!(
            e.contains("allows CUDA 12.8, 13.0 (allowedCudaVersions); this instance's driver supports 12.4"),
            "{e}"
        );
        f.driver_cuda = Some("13.0".into());
        f.base_image = Some((
            "nvidia/cuda:13.1.0".into(),
            vec!["CUDA_VERSION=13.1.0".into()],
        ));
        assert!(check(&d, &f)
            .unwrap_err()
            .contains("the base image nvidia/cuda:13.1.0 needs CUDA 13.1"));
        f.base_image = None;
        assert!(check(&d, &f).is_ok());
        f.free_bytes = Some(5 * GB);
        let e = check(&d, &f).unwrap_err();
        assert!(e.starts_with("the worker needs 20 GB of disk (containerDiskInGb in .runpod/hub.json); 4.7 GiB are free on /var/lib/janitor"), "{e}");
        // A CPU job is not held to a CUDA version.
        f.free_bytes = Some(100 * GB);
        f.gpu_required = false;
        f.driver_cuda = Some("11.0".into());
        assert!(check(&d, &f).is_ok());
        let mut d2 = discovered();
        d2.missing_env = vec!["MODEL_NAME (required by .runpod/hub.json)".into()];
        assert!(check(&d2, &f).unwrap_err().contains("MODEL_NAME"));
    }
}
