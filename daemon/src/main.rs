//! `janitord`: the daemon binary, plus `janitord status` and `janitord gpu-check` for an operator
//! in an SSM session. Exit codes: 0 clean stop, 1 start-up failure (or no usable GPU for
//! `gpu-check`), 2 bad settings.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use janitor_model::report::InstanceInfo;
use janitor_services::aws::{self, S3Store, SqsQueue};
use janitor_services::engine::DockerEngine;
use janitor_services::fleet::Membership;
use janitor_services::gpu::{GpuProbe, Probe};
use janitor_services::imds::{self, Imds};
use janitor_services::logs::CloudWatchLogs;
use janitor_services::metrics::EmfMetrics;
use janitor_services::registry::EcrAuth;
use janitord::health;
use janitord::settings::{self, Flags};
use janitord::status::Status;
use janitord::{Daemon, Parts, Services};
use tokio_util::sync::CancellationToken;

/// Runs repository jobs from the SQS queue, one at a time, on this instance.
#[derive(Parser)]
#[command(name = "janitord", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    flags: Flags,
}

#[derive(Subcommand)]
enum Command {
    /// Print the running daemon's state, job, disk, cache and GPUs (reads /health)
    Status {
        /// Where the daemon serves /health
        #[arg(long, default_value = "127.0.0.1:9464")]
        addr: String,
        /// Print the raw JSON
        #[arg(long)]
        json: bool,
    },
    /// Print what NVML finds; exit 0 only if at least one GPU is usable
    GpuCheck,
    /// Leave the Auto Scaling group for good, lowering its desired capacity (the dead-man
    /// timer runs this before powering a stuck instance off, so no replacement is launched)
    Leave,
}

/// The real services: AWS and the local Docker engine.
struct Aws;

impl Services for Aws {
    type Queue = SqsQueue;
    type Store = S3Store;
    type Engine = DockerEngine;
    type Logs = CloudWatchLogs;
    type Fleet = Membership;
    type Registry = EcrAuth;
    type Metadata = Imds;
    type Metrics = EmfMetrics<CloudWatchLogs>;
    type Secrets = janitor_services::secrets::AwsSecrets;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Status { addr, json }) => return status(&addr, json),
        Some(Command::GpuCheck) => return gpu_check(),
        Some(Command::Leave) => return leave(&cli.flags),
        None => {}
    }
    let settings = match settings::load(&cli.flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("janitord: {e}");
            return ExitCode::from(2);
        }
    };
    janitord::telemetry::init(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "janitord cannot start");
            ExitCode::from(1)
        }
    }
}

fn status(addr: &str, json: bool) -> ExitCode {
    use std::io::{Read, Write};
    let fetched = std::net::TcpStream::connect(addr).and_then(|mut s| {
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp)
    });
    let body = match fetched {
        Ok(resp) => resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
        Err(e) => {
            eprintln!("janitord status: no daemon answers at http://{addr}/health ({e}); is janitord running (systemctl status janitord)?");
            return ExitCode::from(1);
        }
    };
    if json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) => {
            print!("{}", health::describe(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("janitord status: /health did not answer JSON: {e}");
            ExitCode::from(1)
        }
    }
}

/// `janitord leave`: out of the group with the desired capacity lowered; exit 0 when done or
/// when the instance is in no group, 1 when it could not leave.
fn leave(flags: &Flags) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("janitord leave: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let instance_id = match &flags.instance_id {
            Some(id) => id.clone(),
            None => match imds::instance_identity(&Imds::new(3)).await {
                Ok(i) => i.id,
                Err(e) => {
                    eprintln!("janitord leave: {e}");
                    return ExitCode::from(1);
                }
            },
        };
        let config = aws::sdk_config().await;
        let client = aws_sdk_autoscaling::Client::new(&config);
        match Membership::discover(client, &instance_id, 60).await {
            Ok(Some(m)) => match m.leave_for_good().await {
                Ok(()) => {
                    println!("janitord leave: {instance_id} left {} with its desired capacity lowered", m.group);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("janitord leave: {e}");
                    ExitCode::from(1)
                }
            },
            Ok(None) => {
                println!("janitord leave: {instance_id} is in no Auto Scaling group");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("janitord leave: {e}");
                ExitCode::from(1)
            }
        }
    })
}

fn gpu_check() -> ExitCode {
    let probe = Probe::open();
    let inv = probe.inventory();
    match &inv.unavailable {
        Some(why) if inv.count == 0 => {
            println!("no usable GPU: {why}");
            return ExitCode::from(1);
        }
        _ => {}
    }
    println!(
        "{} GPU(s), driver {}, CUDA {}",
        inv.count,
        inv.driver_version.as_deref().unwrap_or("?"),
        inv.cuda_version.as_deref().unwrap_or("?")
    );
    for d in &inv.devices {
        println!(
            "  GPU {}: {} ({} MiB) {}",
            d.index, d.name, d.memory_total_mib, d.uuid
        );
    }
    for s in probe.samples() {
        println!(
            "  GPU {}: {}% busy, {} / {} MiB, {} °C",
            s.index,
            s.utilization_percent,
            s.memory_used_mib,
            s.memory_total_mib,
            s.temperature_c.map_or("?".to_string(), |t| t.to_string())
        );
    }
    match probe.check(inv.count) {
        Ok(()) => {
            println!("healthy");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("not usable: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(settings: settings::Settings) -> anyhow::Result<()> {
    use anyhow::Context;
    // A running job's output spool left by an earlier process belongs to an attempt that is
    // recorded as crashed: it is not shipped again.
    let _ = std::fs::remove_dir_all(settings.output_dir());
    for dir in [
        settings.work_root(),
        settings.spool_dir(),
        settings.output_dir(),
    ] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let own_volume = janitor_services::disk::own_volume(&settings.cache_dir);
    if !own_volume {
        if settings.require_cache_volume {
            anyhow::bail!("{} is on the root filesystem, not on its own volume, and require_cache_volume is set: mount the cache volume there first", settings.cache_dir.display());
        }
        tracing::warn!(cache_dir = %settings.cache_dir.display(), "the cache is on the root filesystem, not its own volume; reports will say so");
    }
    let engine = DockerEngine::connect().await?;
    let instance = match &settings.instance_id {
        Some(id) => InstanceInfo {
            id: id.clone(),
            instance_type: "unknown".to_string(),
            availability_zone: "unknown".to_string(),
            lifecycle: "on-demand".to_string(),
        },
        None => imds::instance_identity(&Imds::new(3)).await?,
    };
    let gpu: Arc<dyn GpuProbe> = Arc::new(Probe::open());
    let inventory = gpu.inventory();
    match &inventory.unavailable {
        None => {
            tracing::info!(gpus = inventory.count, model = ?inventory.devices.first().map(|d| &d.name), driver = ?inventory.driver_version, cuda = ?inventory.cuda_version, "GPUs")
        }
        Some(why) if settings.expect_gpus => {
            tracing::error!(reason = %why, "this instance should have GPUs but none is usable; GPU jobs will be handed back and the instance marked unhealthy")
        }
        Some(why) => {
            tracing::info!(reason = %why, "no GPU: GPU jobs will be handed back to the queue")
        }
    }
    let config = aws::sdk_config().await;
    let asg = aws_sdk_autoscaling::Client::new(&config);
    let membership = match Membership::discover(
        asg,
        &instance.id,
        settings.lifecycle_heartbeat.as_secs(),
    )
    .await
    {
        Ok(Some(m)) => {
            tracing::info!(group = %m.group, hook = ?m.hook, heartbeat_s = m.heartbeat_every, "member of an Auto Scaling group");
            Some(m)
        }
        Ok(None) => {
            tracing::info!("not in an Auto Scaling group: no scale-in protection, lifecycle hooks or idle scale-in");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell whether this instance is in an Auto Scaling group; running without group actions");
            None
        }
    };
    let status = Arc::new(Mutex::new(Status::new(
        &instance.id,
        &settings.cache_dir,
        own_volume,
        inventory,
    )));
    let stop_server = CancellationToken::new();
    let server = match settings.metrics_addr {
        Some(addr) => Some(
            health::serve(addr, status.clone(), gpu.clone(), stop_server.clone())
                .await
                .with_context(|| {
                    format!(
                        "cannot serve /health and /metrics on {addr} (set metrics_addr, or `off`)"
                    )
                })?,
        ),
        None => None,
    };
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    let logs = CloudWatchLogs {
        client: aws_sdk_cloudwatchlogs::Client::new(&config),
    };
    // Off EC2 (an instance id given in the settings) there is no metadata service to watch.
    let metadata = settings.instance_id.is_none().then(|| Imds::new(2));
    let daemon: Daemon<Aws> = Daemon::new(Parts {
        queue: SqsQueue {
            client: aws::sqs_client(&config),
            url: settings.queue_url.clone(),
        },
        store: S3Store {
            client: aws::s3_client(&config),
            bucket: settings.bucket.clone(),
        },
        metrics: EmfMetrics::new(
            logs.clone(),
            settings.log_group.clone(),
            format!("{}/metrics", instance.id),
        ),
        logs,
        engine,
        registry: EcrAuth {
            config: config.clone(),
        },
        secrets: janitor_services::secrets::AwsSecrets::new(&config),
        instance,
        fleet: membership,
        metadata,
        gpu,
        status,
        shutdown,
        settings,
    });
    tracing::info!(instance_id = %daemon.instance().id, instance_type = %daemon.instance().instance_type, "janitord ready");
    daemon.run().await;
    stop_server.cancel();
    if let Some(s) = server {
        let _ = s.await;
    }
    Ok(())
}

/// First SIGTERM/SIGINT: stop the running job gracefully and hand it back. Second: exit at once.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; SIGTERM will kill janitord without a graceful stop");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!(
            "stop requested: finishing gracefully (send the signal again to exit at once)"
        );
        shutdown.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second stop signal: exiting now");
        std::process::exit(130);
    });
}
