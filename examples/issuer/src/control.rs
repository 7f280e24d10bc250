//! The control socket of a running `serve`: a Unix socket at
//! `DIR/control.sock` (mode 0600, in the data directory, which is 0700
//! when the issuer created it), through which `issuer invite` asks the
//! running issuer for a new invitation instead of opening the store that
//! the running node holds locked.
//!
//! The protocol is one request line and one answer line, UTF-8:
//!
//! ```text
//! -> invite
//! <- ok confidant3:…          (the invitation, also written to DIR/invitation.txt and .png)
//! <- error REASON
//! ```
//!
//! Anyone who can open the socket can create invitations: that is the
//! issuer's own user (and root), as for every file in the data directory.

use crate::files::Error;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The socket's name in the data directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// The longest request or answer line.
const MAX_LINE: u64 = 16 * 1024;
/// How long either side waits for the other's line.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// The control socket of a running `serve`.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// A request on the control socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Create an invitation.
    Invite,
}

impl ControlSocket {
    /// Listens at `DIR/control.sock`. A socket file left by an issuer that
    /// was killed is replaced (only a socket: any other file there is an
    /// error). The caller holds the node's store, so no other `serve` runs
    /// on this directory.
    pub fn listen(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(CONTROL_SOCKET);
        match std::fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.file_type().is_socket() => {
                std::fs::remove_file(&path).map_err(|error| {
                    format!("cannot remove the stale socket {}: {error}", path.display())
                })?;
            }
            Ok(_) => {
                return Err(format!(
                    "{} exists and is not a socket; remove it to let `issuer invite` reach \
                     the running issuer",
                    path.display()
                )
                .into());
            }
            Err(_) => {}
        }
        let listener = UnixListener::bind(&path)
            .map_err(|error| format!("cannot listen on {}: {error}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|error| format!("cannot make {} private: {error}", path.display()))?;
        Ok(Self { listener, path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next client.
    pub async fn accept(&self) -> Result<UnixStream, Error> {
        Ok(self.listener.accept().await?.0)
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads a client's request (`None`: not one this issuer knows, answered
/// with an error already).
pub async fn read_request(stream: &mut UnixStream) -> Result<Option<Request>, Error> {
    let line = read_line(stream).await?;
    if line == "invite" {
        return Ok(Some(Request::Invite));
    }
    answer(stream, Err(format!("unknown request {line:?}"))).await?;
    Ok(None)
}

/// Sends the answer to a request.
pub async fn answer(stream: &mut UnixStream, result: Result<String, String>) -> Result<(), Error> {
    let line = match result {
        Ok(text) => format!("ok {text}\n"),
        Err(reason) => format!("error {}\n", reason.replace('\n', " ")),
    };
    stream.write_all(line.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Asks the `serve` running on `dir` for an invitation: `Ok(None)` when no
/// issuer listens there (no socket, or one left by an issuer that was
/// killed).
pub async fn request_invitation(dir: &Path) -> Result<Option<String>, Error> {
    let path = dir.join(CONTROL_SOCKET);
    let mut stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(error) => {
            return Err(format!("cannot reach the issuer at {}: {error}", path.display()).into());
        }
    };
    stream.write_all(b"invite\n").await?;
    let line = read_line(&mut stream).await?;
    match line.split_once(' ') {
        Some(("ok", text)) => Ok(Some(text.to_owned())),
        Some(("error", reason)) => {
            Err(format!("the running issuer could not create an invitation: {reason}").into())
        }
        _ => Err(format!("unexpected answer from {}: {line:?}", path.display()).into()),
    }
}

async fn read_line(stream: &mut UnixStream) -> Result<String, Error> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream).take(MAX_LINE);
    tokio::time::timeout(LINE_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| "no answer on the control socket in time")??;
    if !line.ends_with('\n') {
        return Err("incomplete line on the control socket".into());
    }
    Ok(line.trim_end().to_owned())
}
