//! systemd integration without libsystemd: `sd_notify` over `$NOTIFY_SOCKET` (READY, WATCHDOG,
//! STOPPING) and the heartbeat file the dead-man timer watches.

use std::path::Path;
use std::time::Duration;

/// Sends one notification; does nothing outside systemd.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let sent = if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "could not notify systemd");
    }
}

/// Half the watchdog interval systemd asked for (`WATCHDOG_USEC`), if it did.
pub fn watchdog_every() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let pid_ok = std::env::var("WATCHDOG_PID")
        .ok()
        .is_none_or(|p| p == std::process::id().to_string());
    (usec > 0 && pid_ok).then(|| Duration::from_micros(usec / 2))
}

/// Writes the current Unix time to the heartbeat file (atomically, by rename).
pub fn beat(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    std::fs::write(&tmp, format!("{now}\n"))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn notify_reaches_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // The variable is read on each call; no other test of this crate reads it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        super::notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn heartbeat_file_holds_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/heartbeat");
        super::beat(&path).unwrap();
        let t: i64 = std::fs::read_to_string(&path)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!((time::OffsetDateTime::now_utc().unix_timestamp() - t).abs() < 5);
    }
}
