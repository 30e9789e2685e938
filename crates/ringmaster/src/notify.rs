//! systemd readiness: `READY=1`, `RELOADING=1`, `STOPPING=1` to `$NOTIFY_SOCKET` when set.

use std::os::unix::net::UnixDatagram;

/// Send one sd_notify state line; a no-op without `NOTIFY_SOCKET`.
pub fn sd_notify(state: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let sent = if let Some(abstract_name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, state, "sd_notify failed");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn readiness_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        // Only this test sets NOTIFY_SOCKET; it is read at call time.
        std::env::set_var("NOTIFY_SOCKET", &path);
        super::sd_notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("datagram");
        assert_eq!(&buf[..n], b"READY=1");
    }
}
