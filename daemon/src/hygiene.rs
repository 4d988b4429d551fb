//! Instance hygiene: the layer cache's budget (high/low watermarks, least recently used first,
//! pinned images last, never an image a running container uses), the disk-cleanup policy of
//! seed 004 (stopped containers, dangling and old images, old build cache, unused volumes, old
//! workspaces and temp files, journald), and the free-space floors checked before a job.
//! Cleanup runs only while no job runs. At start, the images named in `prefetch_images` (the
//! agent's) are pulled into the cache when absent, so a first fix pays no pull.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use janitor_services::disk::{disk, DiskStats};
use janitor_services::engine::{ContainerEngine, Prune};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Pulls each image that is not in the cache yet, with its registry's login (ECR); returns
/// what became of each (`Ok` when present or pulled, else the reason). A failure is logged,
/// never fatal: the agent step pulls again when it needs the image.
pub async fn prefetch<E, R>(engine: &E, registry: &R, images: &[String]) -> Vec<Result<(), String>>
where
    E: ContainerEngine,
    R: janitor_services::registry::RegistryAuth,
{
    let mut out = Vec::with_capacity(images.len());
    for image in images {
        let r = janitor_pipeline::agent::ensure_image(engine, registry, image).await;
        match &r {
            Ok(()) => tracing::info!(image = %image, "prefetched image is in the cache"),
            Err(e) => tracing::warn!(image = %image, error = %e, "could not prefetch the image"),
        }
        out.push(r);
    }
    out
}

/// The cleanup policy; every figure configurable (seed 004's table gives the defaults).
#[derive(Debug, Clone)]
pub struct Policy {
    pub cache_dir: PathBuf,
    pub work_root: PathBuf,
    pub spool_dir: PathBuf,
    /// Above this share of the budget, eviction starts…
    pub high_watermark: f64,
    /// …and goes on until usage is under this share.
    pub low_watermark: f64,
    /// A byte budget for the images janitord uses, instead of the volume's size.
    pub budget_bytes: Option<u64>,
    /// Images evicted last (base images); agent images are added as they are used.
    pub pinned: Vec<String>,
    pub image_max_age: Duration,
    pub build_cache_max_age: Duration,
    pub stopped_container_age: Duration,
    pub temp_max_age: Duration,
    /// 0 leaves journald alone.
    pub journald_days: u32,
    /// Machine-wide Docker pruning and journald vacuuming; off where janitord does not own the
    /// machine (tests, a developer's laptop). Eviction of janitord's own images still runs.
    pub docker_prune: bool,
    pub min_free_bytes: u64,
    pub min_free_inodes: u64,
}

/// Whether there is room for a job: `Err` names the floor that is not met.
pub fn floors(stats: &DiskStats, policy: &Policy) -> Result<(), String> {
    if stats.free_bytes < policy.min_free_bytes {
        return Err(format!(
            "{} bytes free on {}, under the {}-byte floor",
            stats.free_bytes,
            policy.cache_dir.display(),
            policy.min_free_bytes
        ));
    }
    // Filesystems without inode limits (btrfs, some overlays) report 0 in all.
    if stats.total_inodes > 0 && stats.free_inodes < policy.min_free_inodes {
        return Err(format!(
            "{} inodes free on {}, under the {}-inode floor",
            stats.free_inodes,
            policy.cache_dir.display(),
            policy.min_free_inodes
        ));
    }
    Ok(())
}

/// When janitord last used each image it built or ran: `{cache_dir}/image-usage.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    #[serde(skip)]
    path: PathBuf,
    pub last_used: BTreeMap<String, i64>,
}

impl Usage {
    pub fn load(cache_dir: &Path) -> Usage {
        let path = cache_dir.join("image-usage.json");
        let mut u: Usage = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        u.path = path;
        u
    }

    pub fn touch(&mut self, image: &str, at: OffsetDateTime) {
        self.last_used
            .insert(image.to_string(), at.unix_timestamp());
        self.save();
    }

    fn forget(&mut self, image: &str) {
        self.last_used.remove(image);
        self.save();
    }

    fn save(&self) {
        let tmp = self.path.with_extension("tmp");
        let written = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "could not save the image-usage record");
        }
    }
}

/// An eviction candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub image: String,
    pub last_used: i64,
    pub pinned: bool,
}

/// Eviction order: unpinned before pinned, then least recently used first. Pure.
pub fn eviction_order(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates
        .sort_by(|a, b| (a.pinned, a.last_used, &a.image).cmp(&(b.pinned, b.last_used, &b.image)));
    candidates
}

/// What one cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cleanup {
    pub cache_used_before: u64,
    pub cache_used_after: u64,
    pub cache_capacity: u64,
    pub evicted: Vec<String>,
    pub old_images_removed: Vec<String>,
    pub containers_pruned: usize,
    pub dangling_images_pruned: usize,
    pub build_cache_reclaimed_bytes: u64,
    pub volumes_pruned: usize,
    pub workspaces_removed: usize,
    pub temp_files_removed: usize,
    pub errors: Vec<String>,
}

/// Bytes the cache uses and the capacity it is measured against: the byte budget and the sizes
/// of the images janitord used, or the cache volume's used and total bytes.
pub async fn measure<E: ContainerEngine>(engine: &E, policy: &Policy, usage: &Usage) -> (u64, u64) {
    match policy.budget_bytes {
        Some(budget) => {
            let mut seen = HashSet::new();
            let mut used = 0u64;
            for image in usage.last_used.keys() {
                if let Some(i) = engine.image(image).await {
                    if seen.insert(i.id) {
                        used += i.size_bytes;
                    }
                }
            }
            (used, budget)
        }
        None => match disk(&policy.cache_dir) {
            Some(d) => (d.total_bytes.saturating_sub(d.free_bytes), d.total_bytes),
            None => (0, 0),
        },
    }
}

/// The full cleanup. Call only while no job runs.
pub async fn cleanup<E: ContainerEngine>(
    engine: &E,
    policy: &Policy,
    usage: &mut Usage,
    now: OffsetDateTime,
) -> Cleanup {
    let mut out = Cleanup::default();
    if policy.docker_prune {
        prune_machine(engine, policy, usage, now, &mut out).await;
    }

    // The budget: evict least recently used first, pinned last, never what a container runs.
    evict(engine, policy, usage, &mut out).await;

    // Finished jobs' workspaces (no job runs now) and the daemon's old temp files.
    remove_leftovers(policy, &mut out);
    tracing::info!(
        cache_used_before = out.cache_used_before,
        cache_used_after = out.cache_used_after,
        cache_capacity = out.cache_capacity,
        evicted = out.evicted.len(),
        old_images = out.old_images_removed.len(),
        containers = out.containers_pruned,
        dangling = out.dangling_images_pruned,
        errors = out.errors.len(),
        "disk cleanup"
    );
    out
}

/// Seed 004's table: stopped containers, dangling and old unused images, old build cache,
/// unused volumes, journald.
async fn prune_machine<E: ContainerEngine>(
    engine: &E,
    policy: &Policy,
    usage: &mut Usage,
    now: OffsetDateTime,
    out: &mut Cleanup,
) {
    let err = out_errors;
    match engine
        .prune(Prune::Containers(policy.stopped_container_age))
        .await
    {
        Ok(r) => out.containers_pruned = r.items,
        Err(e) => out.errors.push(err("prune stopped containers", &e)),
    }
    // Only dangling images older than the stopped-container age: a build in progress makes
    // fresh untagged images that must stay.
    match engine
        .prune(Prune::DanglingImages(policy.stopped_container_age))
        .await
    {
        Ok(r) => out.dangling_images_pruned = r.items,
        Err(e) => out.errors.push(err("prune dangling images", &e)),
    }
    match engine
        .prune(Prune::BuildCache(Some(policy.build_cache_max_age)))
        .await
    {
        Ok(r) => out.build_cache_reclaimed_bytes = r.bytes,
        Err(e) => out.errors.push(err("prune old build cache", &e)),
    }
    match engine.prune(Prune::Volumes).await {
        Ok(r) => out.volumes_pruned = r.items,
        Err(e) => out.errors.push(err("prune unused volumes", &e)),
    }

    // Images no container uses, not used by janitord for the age limit, not pinned.
    let in_use = images_in_use(engine, true).await;
    let cutoff =
        now.unix_timestamp() - i64::try_from(policy.image_max_age.as_secs()).unwrap_or(i64::MAX);
    match (&in_use, engine.images().await) {
        (None, _) => {}
        (Some(in_use), Ok(images)) => {
            for img in images {
                let recent = img
                    .tags
                    .iter()
                    .any(|t| usage.last_used.get(t).is_some_and(|u| *u >= cutoff));
                let pinned = img.tags.iter().any(|t| policy.pinned.contains(t));
                if img.created >= cutoff || recent || pinned || in_use.contains(&img.id) {
                    continue;
                }
                let name = img.tags.first().cloned().unwrap_or_else(|| img.id.clone());
                match engine.remove_image(&name).await {
                    Ok(()) => {
                        usage.forget(&name);
                        out.old_images_removed.push(name);
                    }
                    Err(e) => tracing::debug!(image = %name, error = %e, "old image kept"),
                }
            }
        }
        (Some(_), Err(e)) => out.errors.push(err("list images", &e)),
    }
    if policy.journald_days > 0 {
        let vacuum = tokio::process::Command::new("journalctl")
            .arg(format!("--vacuum-time={}d", policy.journald_days))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await;
        match vacuum {
            Err(e) => out.errors.push(format!("journalctl --vacuum-time: {e}")),
            Ok(status) if !status.success() => out.errors.push(format!(
                "journalctl --vacuum-time={}d exited with {status}",
                policy.journald_days
            )),
            Ok(_) => {}
        }
    }
}

/// The watermark eviction of the images janitord used.
async fn evict<E: ContainerEngine>(
    engine: &E,
    policy: &Policy,
    usage: &mut Usage,
    out: &mut Cleanup,
) {
    let err = out_errors;
    let (used, capacity) = measure(engine, policy, usage).await;
    out.cache_used_before = used;
    out.cache_capacity = capacity;
    let mut used = used;
    let running = images_in_use(engine, false).await;
    if let (true, Some(running)) = (
        capacity > 0 && used as f64 > policy.high_watermark * capacity as f64,
        running,
    ) {
        let mut candidates = Vec::new();
        for (image, last_used) in &usage.last_used {
            let id = engine.image(image).await.map(|i| i.id);
            if id.as_ref().is_some_and(|id| running.contains(id)) {
                continue;
            }
            candidates.push(Candidate {
                image: image.clone(),
                last_used: *last_used,
                pinned: policy.pinned.contains(image),
            });
        }
        for c in eviction_order(candidates) {
            if used as f64 <= policy.low_watermark * capacity as f64 {
                break;
            }
            match engine.remove_image(&c.image).await {
                Ok(()) => {
                    tracing::info!(image = %c.image, pinned = c.pinned, "evicted from the layer cache");
                    usage.forget(&c.image);
                    out.evicted.push(c.image);
                }
                Err(e) => out.errors.push(err(&format!("evict {}", c.image), &e)),
            }
            used = measure(engine, policy, usage).await.0;
        }
        // Still over on the volume (where BuildKit's layers and cache mounts count; an explicit
        // budget is the images' alone): the build cache keeps only what fits under the low
        // watermark beside the images, its least recently used records going first.
        if policy.budget_bytes.is_none() && used as f64 > policy.low_watermark * capacity as f64 {
            let build_cache = engine.build_cache_bytes().await.unwrap_or(0);
            let keep = build_cache_share(used, build_cache, capacity, policy.low_watermark);
            match engine.prune(Prune::BuildCacheKeep(keep)).await {
                Ok(r) => out.build_cache_reclaimed_bytes += r.bytes,
                Err(e) => out
                    .errors
                    .push(err("prune the build cache to its share", &e)),
            }
            used = measure(engine, policy, usage).await.0;
        }
    }
    out.cache_used_after = used;
}

/// What the build cache may keep so that everything fits under the low watermark: what is
/// left of it beside the rest of the volume's use.
fn build_cache_share(used: u64, build_cache: u64, capacity: u64, low_watermark: f64) -> u64 {
    let target = (low_watermark * capacity as f64) as u64;
    target.saturating_sub(used.saturating_sub(build_cache))
}

fn remove_leftovers(policy: &Policy, out: &mut Cleanup) {
    if let Ok(entries) = std::fs::read_dir(&policy.work_root) {
        for e in entries.flatten() {
            // A crashed job's agent may have left files janitord cannot remove as they are.
            if let Err(err) = janitor_services::disk::reclaim_tree(&e.path()) {
                out.errors
                    .push(format!("take back {}: {err}", e.path().display()));
            }
            if std::fs::remove_dir_all(e.path())
                .or_else(|_| std::fs::remove_file(e.path()))
                .is_ok()
            {
                out.workspaces_removed += 1;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(&policy.spool_dir) {
        for e in entries.flatten() {
            let p = e.path();
            let temp = p.extension().is_some_and(|x| x == "tmp" || x == "corrupt");
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > policy.temp_max_age);
            if temp && old && std::fs::remove_file(&p).is_ok() {
                out.temp_files_removed += 1;
            }
        }
    }
}

fn out_errors(what: &str, e: &dyn std::fmt::Display) -> String {
    tracing::warn!(error = %e, "{what} failed");
    format!("{what}: {e}")
}

/// Image ids of containers: running ones only, or all (`all`). `None` when Docker cannot say,
/// and then nothing is removed.
async fn images_in_use<E: ContainerEngine>(engine: &E, all: bool) -> Option<HashSet<String>> {
    match engine.images_in_use(all).await {
        Ok(set) => Some(set),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list containers; no image is removed this time");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            cache_dir: "/c".into(),
            work_root: "/c/w".into(),
            spool_dir: "/c/s".into(),
            high_watermark: 0.8,
            low_watermark: 0.6,
            budget_bytes: None,
            pinned: vec![],
            image_max_age: Duration::from_secs(72 * 3600),
            build_cache_max_age: Duration::from_secs(72 * 3600),
            stopped_container_age: Duration::from_secs(3600),
            temp_max_age: Duration::from_secs(24 * 3600),
            journald_days: 3,
            docker_prune: true,
            min_free_bytes: 10 << 30,
            min_free_inodes: 250_000,
        }
    }

    #[test]
    fn eviction_order_is_lru_with_pinned_last() {
        let c = |image: &str, last_used, pinned| Candidate {
            image: image.into(),
            last_used,
            pinned,
        };
        let order: Vec<String> = eviction_order(vec![
            c("new", 30, false),
            c("base", 1, true),
            c("old", 10, false),
            c("agent", 5, true),
        ])
        .into_iter()
        .map(|c| c.image)
        .collect();
        assert_eq!(order, ["old", "new", "base", "agent"]);
    }

    #[test]
    fn floors_name_what_is_short() {
        let ok = DiskStats {
            total_bytes: 50 << 30,
            free_bytes: 20 << 30,
            total_inodes: 3_000_000,
            free_inodes: 2_000_000,
        };
        assert_eq!(floors(&ok, &policy()), Ok(()));
        let low = DiskStats {
            free_bytes: 1 << 30,
            ..ok
        };
        assert_eq!(
            floors(&low, &policy()),
            Err("1073741824 bytes free on /c, under the 10737418240-byte floor".to_string())
        );
        let inodes = DiskStats {
            free_inodes: 10,
            ..ok
        };
        assert!(floors(&inodes, &policy())
            .unwrap_err()
            .contains("10 inodes free"));
        let no_inode_limits = DiskStats {
            total_inodes: 0,
            free_inodes: 0,
            ..ok
        };
        assert_eq!(floors(&no_inode_limits, &policy()), Ok(()));
    }

    #[test]
    fn the_build_cache_keeps_what_fits_beside_the_rest() {
        // 100 GB volume, 85 used of which 30 build cache: 55 other, 60 allowed, 5 kept.
        let g = 1_000_000_000u64;
        assert_eq!(build_cache_share(85 * g, 30 * g, 100 * g, 0.6), 5 * g);
        // The rest alone is over the mark: the build cache keeps nothing.
        assert_eq!(build_cache_share(90 * g, 10 * g, 100 * g, 0.6), 0);
    }

    #[test]
    fn usage_record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = Usage::load(dir.path());
        u.touch(
            "janitor/a/b:latest",
            OffsetDateTime::from_unix_timestamp(100).unwrap(),
        );
        let again = Usage::load(dir.path());
        assert_eq!(again.last_used.get("janitor/a/b:latest"), Some(&100));
    }
}
