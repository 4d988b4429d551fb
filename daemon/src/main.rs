//! `janitord`: the daemon binary. Exit codes: 0 clean stop, 1 start-up failure, 2 bad settings.

use std::process::ExitCode;

use clap::Parser;
use janitor_model::report::InstanceInfo;
use janitord::aws::{self, S3Store, SqsQueue};
use janitord::daemon::Daemon;
use janitord::docker::Engine;
use janitord::lifecycle::Membership;
use janitord::settings::{self, Flags};
use tokio_util::sync::CancellationToken;

/// Runs repository jobs from the SQS queue, one at a time, on this instance.
#[derive(Parser)]
#[command(name = "janitord", version)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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

async fn run(settings: settings::Settings) -> anyhow::Result<()> {
    use anyhow::Context;
    for dir in [settings.work_root(), settings.spool_dir()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let engine = Engine::connect().await?;
    let instance = match &settings.instance_id {
        Some(id) => InstanceInfo {
            id: id.clone(),
            instance_type: "unknown".to_string(),
            availability_zone: "unknown".to_string(),
            lifecycle: "on-demand".to_string(),
        },
        None => aws::instance_identity().await?,
    };
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
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    let daemon = Daemon {
        queue: SqsQueue {
            client: aws_sdk_sqs::Client::new(&config),
            url: settings.queue_url.clone(),
        },
        store: S3Store {
            client: aws::s3_client(&config),
            bucket: settings.bucket.clone(),
        },
        logs: aws_sdk_cloudwatchlogs::Client::new(&config),
        engine,
        instance,
        membership,
        shutdown,
        settings,
    };
    tracing::info!(instance_id = %daemon.instance.id, instance_type = %daemon.instance.instance_type, queue = %daemon.settings.queue_url, "janitord ready");
    daemon.run().await;
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
