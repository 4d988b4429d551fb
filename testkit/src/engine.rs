//! A container engine for tests: the real Docker engine, with pulls recorded and faults that a
//! test turns on (Docker cannot be made to fail on cue).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use janitor_services::engine::{
    BuildOutcome, BuildSpec, ContainerEngine, ContainerOutcome, ContainerSpec, DockerEngine,
    EngineError, Graces, ImageEntry, ImageFacts, Prune, Pruned,
};
use janitor_services::registry::RegistryCredentials;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a test sees and sets.
#[derive(Default)]
pub struct Hooks {
    /// Every pull: the image and the credentials it carried.
    pub pulls: Vec<(String, Option<RegistryCredentials>)>,
    /// Builds fail with "cannot reach the engine" while this is above zero (counting down).
    pub unreachable_builds: u32,
}

/// The real engine with [`Hooks`].
#[derive(Clone)]
pub struct TestEngine {
    pub inner: DockerEngine,
    pub hooks: Arc<Mutex<Hooks>>,
}

impl TestEngine {
    pub async fn connect() -> TestEngine {
        TestEngine {
            inner: DockerEngine::connect()
                .await
                .expect("the Docker engine must be running for this test"),
            hooks: Arc::default(),
        }
    }
}

/// The error a refused connection to the engine gives.
fn unreachable() -> EngineError {
    EngineError::Connect(bollard_like_io_error())
}

fn bollard_like_io_error() -> janitor_services::engine::BollardError {
    janitor_services::engine::BollardError::IOError {
        err: std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused (on cue)",
        ),
    }
}

impl ContainerEngine for TestEngine {
    async fn build(
        &self,
        spec: &BuildSpec<'_>,
        deadline: Instant,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<BuildOutcome, EngineError> {
        let fail = {
            let mut h = self.hooks.lock().unwrap();
            let fail = h.unreachable_builds > 0;
            h.unreachable_builds = h.unreachable_builds.saturating_sub(1);
            fail
        };
        if fail {
            return Err(unreachable());
        }
        self.inner.build(spec, deadline, cancel, on_line).await
    }

    async fn run(
        &self,
        spec: &ContainerSpec,
        deadline: Instant,
        grace: Graces,
        cancel: &CancellationToken,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<ContainerOutcome, EngineError> {
        self.inner.run(spec, deadline, grace, cancel, on_line).await
    }

    async fn has_image(&self, image: &str) -> bool {
        self.inner.has_image(image).await
    }

    fn versions(&self) -> janitor_services::engine::EngineVersions {
        self.inner.versions()
    }

    async fn build_cache_bytes(&self) -> Result<u64, EngineError> {
        self.inner.build_cache_bytes().await
    }

    async fn pull(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<(), EngineError> {
        self.hooks
            .lock()
            .unwrap()
            .pulls
            .push((image.to_string(), credentials.cloned()));
        // No registry can be reached from a test: the pull is refused as the engine would.
        self.inner.pull(image, credentials).await
    }

    async fn remove(&self, name: &str) {
        self.inner.remove(name).await;
    }

    async fn published(
        &self,
        name: &str,
        port: u16,
    ) -> Result<Option<std::net::SocketAddr>, EngineError> {
        self.inner.published(name, port).await
    }

    async fn pids(&self, name: &str) -> Result<Vec<u32>, EngineError> {
        self.inner.pids(name).await
    }

    async fn managed_containers(
        &self,
        instance: &str,
    ) -> Result<Vec<janitor_services::engine::Labelled>, EngineError> {
        self.inner.managed_containers(instance).await
    }

    async fn image(&self, reference: &str) -> Option<ImageFacts> {
        self.inner.image(reference).await
    }

    async fn images(&self) -> Result<Vec<ImageEntry>, EngineError> {
        self.inner.images().await
    }

    async fn remove_image(&self, reference: &str) -> Result<(), EngineError> {
        self.inner.remove_image(reference).await
    }

    async fn images_in_use(&self, all: bool) -> Result<HashSet<String>, EngineError> {
        self.inner.images_in_use(all).await
    }

    async fn prune(&self, what: Prune) -> Result<Pruned, EngineError> {
        self.inner.prune(what).await
    }
}
