//! What janitord adds around a container's life: `ContainerEngine::run` of `IMAGE true`
//! against a bare `docker run --rm IMAGE true`, interleaved, N of each; medians and ratio.
//!
//! `cargo run --release -p janitor-testkit --example run_overhead -- [N]` (bench/run_overhead.sh)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use janitor_services::engine::{ContainerEngine, ContainerSpec, DockerEngine, Graces};
use janitor_testkit::{ensure_base_image, BASE_IMAGE};
use tokio_util::sync::CancellationToken;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).map_or(30, |a| a.parse().unwrap());
    ensure_base_image();
    let engine = DockerEngine::connect().await.unwrap();
    let graces = Graces {
        deadline: Duration::from_secs(5),
        interrupt: Duration::from_secs(5),
    };
    let (mut bare, mut ours) = (Vec::new(), Vec::new());
    // One of each first, unmeasured: the image's layers are then in the page cache for both.
    for i in 0..=n {
        let t = Instant::now();
        let status = std::process::Command::new("docker")
            .args(["run", "--rm", BASE_IMAGE, "true"])
            .status()
            .unwrap();
        assert!(status.success());
        let b = t.elapsed().as_secs_f64();
        let spec = ContainerSpec {
            name: format!("janitor-bench-overhead-{i}"),
            image: BASE_IMAGE.to_string(),
            cmd: Some(vec!["true".to_string()]),
            labels: HashMap::new(),
            ..ContainerSpec::default()
        };
        let t = Instant::now();
        let out = engine
            .run(
                &spec,
                tokio::time::Instant::now() + Duration::from_secs(60),
                graces,
                &CancellationToken::new(),
                &mut |_| {},
            )
            .await
            .unwrap();
        let o = t.elapsed().as_secs_f64();
        assert_eq!(out.exit_code, Some(0));
        if i > 0 {
            bare.push(b);
            ours.push(o);
        }
    }
    let (mb, mo) = (median(&mut bare), median(&mut ours));
    println!(
        "{}",
        serde_json::json!({
            "n": n,
            "bare_docker_run_median_s": (mb * 1000.0).round() / 1000.0,
            "janitor_run_median_s": (mo * 1000.0).round() / 1000.0,
            "ratio": ((mo / mb) * 100.0).round() / 100.0,
        })
    );
}
