//! Logging setup and the buffered writer behind it: lines collect in memory and one thread
//! writes them out.

use std::sync::OnceLock;

/// Installs the global tracing subscriber: text or JSON lines on stderr, filtered by `level`
/// (an `EnvFilter` directive; `RUST_LOG` wins when set).
///
/// Lines are appended to a buffer in memory and written by a background thread every
/// [`LOG_FLUSH_EVERY`], so a request costs a copy under a short lock, not a `write` system
/// call nor a wake-up of another thread (with the proxy on one core, waking a log thread
/// per line cost ~15% of throughput). Nothing is dropped: a buffer past [`LOG_BUFFER_MAX`] is
/// written by the thread that filled it. Keep the guard until exit: dropping it writes what is
/// left.
pub fn init_logging(json: bool, level: &str) -> LogGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (sink, guard) = LogSink::start(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink);
    // A second call (tests) keeps the first subscriber.
    if json {
        if builder.json().flatten_event(true).try_init().is_ok() {
            let _ = JSON_ACCESS.set(guard.shared.clone());
        }
    } else {
        let _ = builder.try_init();
    }
    guard
}

/// Where JSON access lines go when [`init_logging`] installed the JSON format: straight into the
/// log buffer, formatted by [`AccessLine::write_json`] rather than by the subscriber.
pub(super) static JSON_ACCESS: OnceLock<std::sync::Arc<LogShared>> = OnceLock::new();

/// How long a log line may wait in memory before it is written.
pub const LOG_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(10);
/// Buffered log bytes past which the writing thread writes them itself.
pub const LOG_BUFFER_MAX: usize = 256 * 1024;

pub(super) struct LogShared {
    /// Lines not yet written.
    pub(super) pending: std::sync::Mutex<Vec<u8>>,
    /// The output, locked for the whole swap-and-write so chunks keep their order.
    out: std::sync::Mutex<Box<dyn std::io::Write + Send>>,
}

impl LogShared {
    pub(super) fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let chunk = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                return;
            }
            std::mem::replace(&mut *pending, Vec::with_capacity(64 * 1024))
        };
        // A log that cannot be written has nowhere to report it; the request goes on.
        let _ = out.write_all(&chunk).and_then(|()| out.flush());
    }
}

/// The `MakeWriter` behind [`init_logging`]: each formatted event is one `write` into the
/// shared buffer.
pub struct LogSink {
    shared: std::sync::Arc<LogShared>,
}

/// Stops the log writer thread and writes what is buffered when dropped.
pub struct LogGuard {
    shared: std::sync::Arc<LogShared>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogSink {
    /// A sink writing to `out`, and the guard of its writer thread.
    pub fn start(out: impl std::io::Write + Send + 'static) -> (LogSink, LogGuard) {
        let shared = std::sync::Arc::new(LogShared {
            pending: std::sync::Mutex::new(Vec::with_capacity(64 * 1024)),
            out: std::sync::Mutex::new(Box::new(out)),
        });
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("scopegate-log".into())
                .spawn(move || {
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(LOG_FLUSH_EVERY)
                    {
                        shared.flush();
                    }
                    shared.flush();
                })
                .ok()
        };
        let guard = LogGuard {
            shared: shared.clone(),
            stop: Some(stop),
            thread,
        };
        (LogSink { shared }, guard)
    }
}

/// One event's writer: a reference to the sink, so no reference count moves per line.
pub struct LogLine<'a>(&'a LogShared);

impl std::io::Write for LogLine<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut pending = self.0.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.extend_from_slice(line);
            pending.len() >= LOG_BUFFER_MAX
        };
        if full {
            self.0.flush();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> LogLine<'a> {
        LogLine(&self.shared)
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        match self.thread.take() {
            Some(thread) => {
                let _ = thread.join();
            }
            None => self.shared.flush(),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// A writer whose output the test reads back.
    #[derive(Clone, Default)]
    pub(in crate::telemetry) struct Shared(pub(in crate::telemetry) Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_are_written_by_the_thread_without_waiting_for_exit() {
        let out = Shared::default();
        let (sink, _guard) = LogSink::start(out.clone());
        sink.make_writer().write_all(b"one\n").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while out.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was never written"
            );
            std::thread::sleep(LOG_FLUSH_EVERY);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"one\n");
    }

    #[test]
    fn every_log_line_is_written_once_and_in_order_past_the_buffer_bound() {
        let out = Shared::default();
        let (sink, guard) = LogSink::start(out.clone());
        let lines = 3 * LOG_BUFFER_MAX / 16;
        for i in 0..lines {
            writeln!(sink.make_writer(), "{i:015}").unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let got: Vec<usize> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(got, (0..lines).collect::<Vec<_>>());
    }
}
