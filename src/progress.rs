//! How long-running library work reports progress without knowing about
//! terminals: the library calls a [`Progress`]; the binaries implement it
//! (with progress bars, see `cli::progress`), tests and quiet runs use
//! [`Quiet`].
//!
//! A task is started with what it counts ([`Unit`]) and, when known, its
//! total; it is advanced from any thread (layers stream on reader threads)
//! and finished by dropping it or calling [`Task::finish`].

/// What a task counts, so a front end can show it (bytes as MiB, items as numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes read or written.
    Bytes,
    /// Things done (archive entries, UKIs).
    Items,
}

/// One running piece of work.
pub trait Task: Send + Sync {
    /// Sets the total, once it is known (0 means unknown).
    fn set_total(&self, total: u64);
    /// Sets how much is done.
    fn set_done(&self, done: u64);
    /// Adds to how much is done.
    fn advance(&self, by: u64);
    /// Says what is being done now (a layer, an entry).
    fn set_message(&self, message: &str);
    /// The task is over; a front end removes its display.
    fn finish(&self);
}

/// Where tasks are started: one per long-running step.
pub trait Progress: Send + Sync {
    /// Starts a task called `label`, counting `unit`, with `total` when known.
    fn start(&self, label: &str, unit: Unit, total: Option<u64>) -> Box<dyn Task>;
}

/// Reports nothing: for tests, `--json` and non-interactive runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

struct QuietTask;

impl Task for QuietTask {
    fn set_total(&self, _: u64) {}
    fn set_done(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn set_message(&self, _: &str) {}
    fn finish(&self) {}
}

impl Progress for Quiet {
    fn start(&self, _: &str, _: Unit, _: Option<u64>) -> Box<dyn Task> {
        Box::new(QuietTask)
    }
}

/// A reader that advances a task by the bytes read through it.
pub struct ReadProgress<R> {
    inner: R,
    task: std::sync::Arc<dyn Task>,
}

impl<R> ReadProgress<R> {
    /// Wraps `inner`; every read advances `task`.
    pub fn new(inner: R, task: std::sync::Arc<dyn Task>) -> Self {
        ReadProgress { inner, task }
    }
}

impl<R: std::io::Read> std::io::Read for ReadProgress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.task.advance(n as u64);
        Ok(n)
    }
}
