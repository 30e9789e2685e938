//! The control socket (`var/ringmaster.sock`, mode 0600): newline-delimited circus-shaped JSON,
//! `{"id","command","properties"}` in, `{"status","time","id",...}` out, any number of commands
//! per connection. The same commands arrive from Redis (see [`crate::bridge`]); both feed the
//! supervision loop's input channel and wait for its reply.

use std::path::Path;
use std::sync::Arc;

use ironwork_core::messages::{epoch_seconds, ControlCommand, ControlReply};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::supervisor::Input;

/// Most client connections served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 64;
/// Longest request line accepted.
const MAX_REQUEST: usize = 1 << 20;

/// Bind the control socket with mode 0600, replacing a stale socket file. Fails if another
/// ringmaster answers on it.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if crate::process::socket_is_live(path) {
            anyhow::bail!("another ringmaster is answering on {}", path.display());
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    Ok(listener?)
}

/// Serve the control socket until `token` is cancelled.
pub async fn serve(listener: UnixListener, inputs: mpsc::Sender<Input>, token: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_CLIENTS));
    let tracker = TaskTracker::new();
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let stream = tokio::select! {
            _ = token.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (inputs, token) = (inputs.clone(), token.clone());
        tracker.spawn(async move {
            let _permit = permit;
            client(stream, inputs, token).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Serve one connection. Cancellation is only looked at between requests: a command being
/// answered (`quit` included) always gets its reply written.
async fn client(stream: UnixStream, inputs: mpsc::Sender<Input>, token: CancellationToken) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        // At most MAX_REQUEST + 1 bytes are read into memory for one request.
        let mut bounded = (&mut lines).take(MAX_REQUEST as u64 + 1);
        let read = tokio::select! {
            _ = token.cancelled() => return,
            r = bounded.read_line(&mut line) => r,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) if n > MAX_REQUEST => return,
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<ControlCommand>(&line) {
            Ok(cmd) => dispatch(cmd, &inputs).await,
            Err(e) => error_reply("", &format!("invalid command: {e}")),
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Hand a command to the supervision loop and wait for its reply.
pub async fn dispatch(cmd: ControlCommand, inputs: &mpsc::Sender<Input>) -> ControlReply {
    let id = cmd.id.clone();
    let (tx, rx) = oneshot::channel();
    if inputs.send(Input::Command(cmd, tx)).await.is_err() {
        return error_reply(&id, "ringmaster is shutting down");
    }
    match rx.await {
        Ok(reply) => reply,
        Err(_) => error_reply(&id, "ringmaster is shutting down"),
    }
}

/// An error reply in circus's shape.
pub fn error_reply(id: &str, reason: &str) -> ControlReply {
    ControlReply {
        id: id.to_string(),
        status: "error".into(),
        time: epoch_seconds(),
        reason: Some(reason.to_string()),
        body: Default::default(),
    }
}

/// A client of the control socket (what `ringctl` uses).
pub struct Client {
    lines: BufReader<tokio::net::unix::OwnedReadHalf>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connect to the control socket at `path`.
    pub async fn connect(path: &Path) -> std::io::Result<Self> {
        let (read, write) = UnixStream::connect(path).await?.into_split();
        Ok(Self {
            lines: BufReader::new(read),
            write,
        })
    }

    /// Send one command and wait for its reply.
    pub async fn call(
        &mut self,
        command: &str,
        properties: serde_json::Map<String, serde_json::Value>,
    ) -> anyhow::Result<ControlReply> {
        let cmd = ControlCommand {
            id: format!("{:016x}", rand::random::<u64>()),
            command: command.to_string(),
            properties,
        };
        let mut out = serde_json::to_vec(&cmd)?;
        out.push(b'\n');
        self.write.write_all(&out).await?;
        let mut line = String::new();
        if self.lines.read_line(&mut line).await? == 0 {
            anyhow::bail!("ringmaster closed the connection");
        }
        Ok(serde_json::from_str(&line)?)
    }
}
