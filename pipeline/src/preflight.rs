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
}

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
        let allowed = d
            .allowed_cuda
            .iter()
            .filter_map(|v| runpod::cuda_version(v))
            .min();
        if let Some(v) = allowed {
            said.push(cuda_fits(
                v,
                "the worker (allowedCudaVersions)",
                f.driver_cuda.as_deref(),
            )?);
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
    if let Some(gb) = d.container_disk_gb {
        match f.free_bytes {
            Some(free) if free < gb.saturating_mul(GB) => {
                return Err(format!(
                    "the worker needs {gb} GB of disk (containerDiskInGb in {}); {:.1} GiB are free on {}",
                    runpod::HUB_FILE,
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
        }
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
            e.contains("needs CUDA 12.8; this instance's driver supports 12.4"),
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
