//! The `run` step (the image's smoke command or CMD run to its exit, for repositories without
//! runpod tests, with its output scanned for `ERROR`) and the `gpu` step (`nvidia-smi` inside
//! the built image with the GPU, and whether the worker used it).

use std::sync::Mutex;

use janitor_model::report::{GpuInfo, GpuUsage};
use janitor_services::engine::{ContainerEngine, ContainerOutcome, ContainerSpec, EngineError};
use janitor_services::gpu::GpuProbe;

use crate::context::{job_labels, JobContext};
use crate::gpu_usage::{self, Tracker};
use crate::scan::ErrorScanner;
use crate::steps::{StepEnv, StepOutcome};

/// Runs the built image to its exit with the worker's environment `vars`; a GPU job's use of
/// the GPU is sampled meanwhile.
pub async fn run<E: ContainerEngine>(
    env: &StepEnv<'_, E>,
    tag: &str,
    vars: &[String],
    probe: &dyn GpuProbe,
    scanner: &mut ErrorScanner,
) -> (StepOutcome, Option<GpuUsage>) {
    let StepEnv {
        engine,
        ctx,
        deadline,
        cancel,
        sink,
    } = *env;
    let spec = &ctx.job.spec;
    let container = ContainerSpec {
        name: format!("janitor-{}-run", ctx.job.job_id),
        image: tag.to_string(),
        cmd: spec.smoke_command.clone(),
        env: vars.to_vec(),
        gpu: spec.gpu_required,
        labels: job_labels(ctx),
        ..Default::default()
    };
    let mut on_line = |l: &str| {
        scanner.scan(l);
        sink.line(&format!("[run] {l}"));
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let tracker = Mutex::new(Tracker::default());
    let running = async {
        let o = engine
            .run(&container, deadline, ctx.graces, cancel, &mut on_line)
            .await;
        stop.cancel();
        o
    };
    let sampler = async {
        if spec.gpu_required {
            gpu_usage::sample(engine, probe, &container.name, &stop, &tracker).await;
        }
    };
    let (outcome, ()) = tokio::join!(running, sampler);
    let usage = spec
        .gpu_required
        .then(|| tracker.into_inner().unwrap_or_default().finish());
    (exit_outcome(outcome, ctx), usage)
}

/// A container's end as a step outcome: 0 succeeds, anything else fails with its code.
fn exit_outcome(outcome: Result<ContainerOutcome, EngineError>, ctx: &JobContext) -> StepOutcome {
    match outcome {
        Err(e) => StepOutcome::engine(&e),
        Ok(o) => match (o.stopped, o.exit_code) {
            (Some(reason), code) => {
                StepOutcome::stopped(reason, ctx.job.spec.timeout).with_code(code)
            }
            (None, Some(0)) => StepOutcome::succeeded("exited with code 0").with_code(Some(0)),
            (None, Some(code)) => {
                StepOutcome::failed(format!("exited with code {code}")).with_code(Some(code))
            }
            (None, None) => StepOutcome::failed("the container's exit code could not be read"),
        },
    }
}

/// Runs `nvidia-smi` in the built image with the GPU; the GPUs it lists go into `gpu`.
pub async fn gpu<E: ContainerEngine>(
    env: &StepEnv<'_, E>,
    tag: &str,
    gpu: &mut Option<GpuInfo>,
) -> StepOutcome {
    let StepEnv {
        engine,
        ctx,
        deadline,
        cancel,
        sink,
    } = *env;
    let container = ContainerSpec {
        name: format!("janitor-{}-gpu", ctx.job.job_id),
        image: tag.to_string(),
        entrypoint: Some(vec!["nvidia-smi".to_string()]),
        cmd: Some(vec![
            "--query-gpu=name,driver_version,memory.total".to_string(),
            "--format=csv,noheader,nounits".to_string(),
        ]),
        gpu: true,
        labels: job_labels(ctx),
        ..Default::default()
    };
    let lines = Mutex::new(Vec::new());
    let mut on_line = |l: &str| {
        sink.line(&format!("[gpu] {l}"));
        if let Ok(mut v) = lines.lock() {
            v.push(l.to_string());
        }
    };
    let outcome = engine
        .run(&container, deadline, ctx.graces, cancel, &mut on_line)
        .await;
    let lines = lines.into_inner().unwrap_or_default();
    match outcome {
        // On a GPU instance a GPU that cannot be attached is the instance's fault.
        Err(e) => StepOutcome::error(format!("no usable NVIDIA GPU in the container: {e}")),
        Ok(o) => match (o.stopped, o.exit_code) {
            (Some(reason), code) => {
                StepOutcome::stopped(reason, ctx.job.spec.timeout).with_code(code)
            }
            (None, Some(0)) => match parse_gpus(&lines) {
                Some(info) => {
                    let detail = format!(
                        "{} GPU(s): {}",
                        info.count,
                        info.model.clone().unwrap_or_default()
                    );
                    *gpu = Some(info);
                    StepOutcome::succeeded(detail).with_code(Some(0))
                }
                None => StepOutcome::failed("nvidia-smi listed no GPU").with_code(Some(0)),
            },
            (None, code) => StepOutcome::failed(format!(
                "nvidia-smi failed with exit code {}",
                code.map_or("unknown".to_string(), |c| c.to_string())
            ))
            .with_code(code),
        },
    }
}

/// `name, driver, memory MiB` lines from `nvidia-smi --query-gpu`.
pub fn parse_gpus(lines: &[String]) -> Option<GpuInfo> {
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split(',').map(str::trim).collect::<Vec<_>>())
        .filter(|f| f.len() >= 3 && !f[0].is_empty())
        .collect();
    let first = rows.first()?;
    Some(GpuInfo {
        count: u32::try_from(rows.len()).unwrap_or(u32::MAX),
        model: Some(first[0].to_string()),
        driver: Some(first[1].to_string()),
        memory_mib: first[2].parse().ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_lines() {
        let info = parse_gpus(&[
            "NVIDIA A10G, 550.54.15, 23028".to_string(),
            "NVIDIA A10G, 550.54.15, 23028".to_string(),
        ])
        .unwrap();
        assert_eq!(info.count, 2);
        assert_eq!(info.memory_mib, Some(23028));
        assert_eq!(parse_gpus(&["No devices were found".to_string()]), None);
    }
}
