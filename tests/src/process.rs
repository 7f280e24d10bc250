//! Child processes for the end-to-end tests: started with piped output,
//! read line by line on background threads, waited for with generous
//! bounds, and killed (SIGKILL) when dropped, so a failing test leaves no
//! process behind.

use std::ffi::OsStr;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Something a test waited for did not happen, or a process could not be
/// started or signalled. The message carries the process's output.
#[derive(Debug)]
pub struct HarnessError(String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

impl HarnessError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

#[derive(Default)]
struct Captured {
    stdout: Vec<String>,
    stderr: String,
    stdout_closed: bool,
}

#[derive(Default)]
struct Output {
    captured: Mutex<Captured>,
    changed: Condvar,
}

impl Output {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        self.captured.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running child process whose output is captured.
pub struct Process {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    output: Arc<Output>,
    readers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Process {
    /// Starts `binary` with `args`; `name` labels it in error messages.
    pub fn spawn<S: AsRef<OsStr>>(
        name: &str,
        binary: impl AsRef<Path>,
        args: &[S],
    ) -> Result<Self, HarnessError> {
        Self::spawn_with_log(name, binary, args, "info")
    }

    /// [`Process::spawn`] with `RUST_LOG` set to `log`.
    pub fn spawn_with_log<S: AsRef<OsStr>>(
        name: &str,
        binary: impl AsRef<Path>,
        args: &[S],
        log: &str,
    ) -> Result<Self, HarnessError> {
        let mut child = Command::new(binary.as_ref())
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("CONFIDANT_TEST_LOG").unwrap_or_else(|_| log.to_owned()),
            )
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                HarnessError(format!(
                    "cannot start {name} ({}): {error}",
                    binary.as_ref().display()
                ))
            })?;
        let output = Arc::new(Output::default());
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let output = Arc::clone(&output);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    output.lock().stdout.push(line);
                    output.changed.notify_all();
                }
                output.lock().stdout_closed = true;
                output.changed.notify_all();
            }));
        }
        if let Some(mut stderr) = child.stderr.take() {
            let output = Arc::clone(&output);
            readers.push(std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(read) = stderr.read(&mut buffer) {
                    if read == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(buffer.get(..read).unwrap_or_default())
                        .into_owned();
                    output.lock().stderr.push_str(&text);
                }
            }));
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            status: None,
            output,
            readers,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lines it printed on stdout so far.
    pub fn lines(&self) -> Vec<String> {
        self.output.lock().stdout.clone()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.output.lock().stderr.clone()
    }

    /// Its output, for error messages.
    pub fn transcript(&self) -> String {
        let captured = self.output.lock();
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr (last 6000 bytes) ---\n{}",
            self.name,
            captured.stdout.join("\n"),
            self.name,
            tail(&captured.stderr, 6000),
        )
    }

    /// Waits up to `limit` for a stdout line that satisfies `wanted`
    /// (including lines already printed) and returns it.
    pub fn wait_for_line(
        &self,
        what: &str,
        limit: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<String, HarnessError> {
        self.wait_for_lines(what, limit, 1, wanted)
            .map(|mut lines| lines.swap_remove(0))
    }

    /// Waits up to `limit` until `count` stdout lines satisfy `wanted`, and
    /// returns them.
    pub fn wait_for_lines(
        &self,
        what: &str,
        limit: Duration,
        count: usize,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, HarnessError> {
        let deadline = Instant::now() + limit;
        let mut captured = self.output.lock();
        loop {
            let found: Vec<String> = captured
                .stdout
                .iter()
                .filter(|line| wanted(line))
                .cloned()
                .collect();
            if found.len() >= count {
                return Ok(found);
            }
            let now = Instant::now();
            if now >= deadline || captured.stdout_closed {
                drop(captured);
                let reason = if now >= deadline {
                    format!("not within {limit:?}")
                } else {
                    "its stdout closed".to_owned()
                };
                return Err(HarnessError(format!(
                    "{} never printed {what} ({} of {count} lines; {reason})\n{}",
                    self.name,
                    found.len(),
                    self.transcript()
                )));
            }
            captured = self
                .output
                .changed
                .wait_timeout(captured, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Its exit status, if it has exited.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, HarnessError> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(|error| HarnessError(format!("{}: {error}", self.name)))?;
        }
        Ok(self.status)
    }

    /// Waits up to `limit` for it to exit, and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus, HarnessError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status()? {
                self.join_readers();
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError(format!(
                    "{} did not exit within {limit:?}\n{}",
                    self.name,
                    self.transcript()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `limit` for it to exit and requires success (status 0).
    pub fn wait_success(&mut self, limit: Duration) -> Result<(), HarnessError> {
        let status = self.wait_exit(limit)?;
        if status.success() {
            Ok(())
        } else {
            Err(HarnessError(format!(
                "{} exited with {status}\n{}",
                self.name,
                self.transcript()
            )))
        }
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&mut self) -> Result<(), HarnessError> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .map_err(|error| HarnessError(format!("cannot signal {}: {error}", self.name)))
    }

    /// Kills it with SIGKILL (a crash at an arbitrary instruction) and
    /// waits for it.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        if self.try_status()?.is_none() {
            // It may have exited since: then killing fails harmlessly.
            let _ = self.child.kill();
            self.status = Some(
                self.child
                    .wait()
                    .map_err(|error| HarnessError(format!("{}: {error}", self.name)))?,
            );
        }
        self.join_readers();
        Ok(())
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The last `max` bytes of `text` (on a character boundary).
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Runs `binary` with `args` to completion (at most `limit`), requires
/// success, and returns its stdout lines.
pub fn run_to_end<S: AsRef<OsStr>>(
    name: &str,
    binary: impl AsRef<Path>,
    args: &[S],
    limit: Duration,
) -> Result<Vec<String>, HarnessError> {
    let mut process = Process::spawn(name, binary, args)?;
    process.wait_success(limit)?;
    Ok(process.lines())
}

/// Waits up to `limit` until `condition` holds, checking every 20 ms.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut condition: impl FnMut() -> Result<bool, HarnessError>,
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + limit;
    loop {
        if condition()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HarnessError(format!("{what}: not within {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
