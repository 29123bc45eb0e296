//! The `burrowd` binary: command line, logging, signals. Everything else is the library.

use burrowd::Server;
use burrowd::config::cli::{self, Action};
use burrowd::config::summary;
use burrowd::config::units::human_bytes;
use burrowd::wire::printable::Printable;
use std::process::ExitCode;

fn main() -> ExitCode {
    let settings = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Action::Run(settings)) => settings,
        Ok(Action::Help) => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Ok(Action::Check(settings)) => {
            // Everything is read and valid; nothing is bound, so this is safe beside a running burrowd.
            print!("{}", summary::describe(&settings.config));
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("burrowd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("burrowd: {e} (try --help)");
            return ExitCode::from(2);
        }
    };
    init_logging(settings.verbosity, settings.log_time);
    let config = settings.config;
    for spec in config.services.iter().filter(|s| s.is_open_proxy()) {
        log::warn!(
            "{} is not loopback and needs no login (no users, or --socks4): this is an open proxy",
            spec.listen_addr()
        );
    }
    let drain_timeout = config.drain_timeout;

    // Before any other thread starts (ctrlc starts one), so that every thread leaves
    // SIGHUP and SIGUSR1 to the watcher.
    let requests = requests::watch();
    let (signals, signal) = crossbeam_channel::unbounded();
    #[cfg(windows)]
    let console_closing = signals.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = signals.send(Stop::Signal);
    }) {
        eprintln!("burrowd: cannot install signal handler: {e}");
        return ExitCode::FAILURE;
    }
    // After ctrlc's: Windows asks the handler installed last first.
    #[cfg(windows)]
    if let Err(e) = console::on_close(console_closing) {
        eprintln!("burrowd: cannot install console handler: {e}");
        return ExitCode::FAILURE;
    }
    let mut server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("burrowd: {e}");
            return ExitCode::FAILURE;
        }
    };

    let stop = loop {
        crossbeam_channel::select! {
            recv(signal) -> stop => break stop,
            recv(requests) -> request => match request {
                Ok(requests::Request::Reload) => server.reload(),
                Ok(requests::Request::ShowSessions) => {
                    for line in server.session_table().lines() {
                        log::info!("sessions: {line}");
                    }
                }
                Err(_) => {}
            },
        }
    };
    let drain_timeout = match stop {
        #[cfg(windows)]
        Ok(Stop::ConsoleClosing) => drain_timeout.min(console::CLOSING_DRAIN),
        _ => drain_timeout,
    };
    // Logged once the listeners are closed, so the line is true when it is read.
    server.stop_accepting();
    log::info!("signal received: no new clients; draining live sessions for up to {drain_timeout:?}");
    std::thread::spawn(move || {
        if signal.recv().is_ok() {
            log::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    });
    let drained = server.drain(drain_timeout);
    let stats = server.stats();
    log::info!(
        "shutdown: {} sessions served, {} refused, {} closed to make room, up {} down {}{}",
        stats.sessions,
        stats.refused,
        stats.reclaimed,
        human_bytes(stats.bytes_up),
        human_bytes(stats.bytes_down),
        if drained { String::new() } else { format!(", {} still open were cut", stats.active) }
    );
    ExitCode::SUCCESS
}

/// What asks burrowd to stop.
enum Stop {
    /// SIGINT or SIGTERM; Ctrl-C or Ctrl-Break on Windows.
    Signal,
    /// Windows: the console window is closing (or the user logging off, or the system
    /// shutting down), and the process will be ended a few seconds from now.
    #[cfg(windows)]
    ConsoleClosing,
}

/// Closing the console window. Windows sends CTRL_CLOSE_EVENT and ends the process as soon
/// as the handler returns, so ctrlc's handler, which returns at once, would leave no time
/// to drain or write the summary: this one, called before it, tells `main` and then waits
/// while `main` drains and exits.
#[cfg(windows)]
mod console {
    #![allow(unsafe_code)] // SetConsoleCtrlHandler has no safe wrapper in std or ctrlc
    use super::Stop;
    use crossbeam_channel::Sender;
    use std::sync::OnceLock;
    use std::time::Duration;

    /// How long live sessions may finish when the console closes: Windows ends the process
    /// 5 s after it sends the event, and the summary line must be out by then.
    pub(super) const CLOSING_DRAIN: Duration = Duration::from_secs(3);
    const CTRL_CLOSE_EVENT: u32 = 2;
    const CTRL_LOGOFF_EVENT: u32 = 5;
    const CTRL_SHUTDOWN_EVENT: u32 = 6;

    static STOP: OnceLock<Sender<Stop>> = OnceLock::new();

    #[link(name = "kernel32")]
    unsafe extern "system" {
        fn SetConsoleCtrlHandler(handler: Option<unsafe extern "system" fn(u32) -> i32>, add: i32) -> i32;
    }

    unsafe extern "system" fn handler(event: u32) -> i32 {
        if !matches!(event, CTRL_CLOSE_EVENT | CTRL_LOGOFF_EVENT | CTRL_SHUTDOWN_EVENT) {
            return 0; // Ctrl-C and Ctrl-Break go on to ctrlc's handler
        }
        if let Some(stop) = STOP.get() {
            let _ = stop.send(Stop::ConsoleClosing);
        }
        // `main` exits the process once the summary is written; the system would end it
        // anyway when this returns.
        std::thread::sleep(CLOSING_DRAIN + Duration::from_secs(2));
        1
    }

    pub(super) fn on_close(stop: Sender<Stop>) -> std::io::Result<()> {
        let _ = STOP.set(stop);
        // SAFETY: `handler` is a function with the signature Windows calls; it stays
        // registered for the life of the process.
        if unsafe { SetConsoleCtrlHandler(Some(handler), 1) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

fn init_logging(verbosity: i8, log_time: Option<bool>) {
    let level = match verbosity {
        i8::MIN..=-2 => log::LevelFilter::Error,
        -1 => log::LevelFilter::Warn,
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, ignored) = logging::Filter::new(level, rust_log.as_deref());
    let logger = logging::Logger { form: logging::Form::for_stderr(log_time), filter };
    log::set_max_level(logger.filter.most());
    // Once, for the life of the process: the logger lives as long as it does.
    if log::set_logger(Box::leak(Box::new(logger))).is_ok() {
        for directive in ignored {
            log::warn!("RUST_LOG: {} is not LEVEL, TARGET or TARGET=LEVEL; ignored", Printable(&directive));
        }
    }
}

/// How a log line starts, for where stderr goes: the journal reads a priority prefix and
/// stamps lines itself; a file or a terminal needs a timestamp of ours.
mod logging {
    use std::io::{self, Write};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct Form {
        /// `<N>` before each line, N the sd-daemon priority (`<3>` error … `<7>` debug).
        pub(super) priority_prefix: bool,
        /// An RFC 3339 UTC timestamp first (after the priority prefix, if any).
        pub(super) timestamp: bool,
    }

    /// Writes each record that passes the filter to stderr, one whole line at a time.
    pub(super) struct Logger {
        pub(super) form: Form,
        pub(super) filter: Filter,
    }

    impl log::Log for Logger {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= self.filter.level_for(metadata.target())
        }

        fn log(&self, record: &log::Record<'_>) {
            if !self.enabled(record.metadata()) {
                return;
            }
            // Formatted first, then one write: stderr is unbuffered, and lines from
            // several threads must not interleave.
            let mut line = Vec::with_capacity(256);
            if self.form.write(&mut line, record).is_ok() {
                let _ = io::stderr().lock().write_all(&line);
            }
        }

        fn flush(&self) {}
    }

    /// Which records are written: the level `-v` and `-q` chose, unless `RUST_LOG` says
    /// otherwise with comma-separated directives, each `LEVEL` (every target), `TARGET=LEVEL`
    /// or `TARGET` (every level); the directive with the longest target that starts the
    /// record's target decides.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) struct Filter {
        everything: log::LevelFilter,
        by_target: Vec<(String, log::LevelFilter)>,
    }

    impl Filter {
        /// The filter, and the directives of `rust_log` that mean nothing (to be warned of).
        pub(super) fn new(level: log::LevelFilter, rust_log: Option<&str>) -> (Filter, Vec<String>) {
            let mut filter = Filter { everything: level, by_target: Vec::new() };
            let mut ignored = Vec::new();
            for directive in rust_log.unwrap_or_default().split(',').map(str::trim).filter(|d| !d.is_empty()) {
                match directive.split_once('=') {
                    None => match directive.parse() {
                        Ok(level) => filter.everything = level,
                        Err(_) if is_target(directive) => {
                            filter.by_target.push((directive.into(), log::LevelFilter::Trace))
                        }
                        Err(_) => ignored.push(directive.into()),
                    },
                    Some((target, level)) => match level.parse() {
                        Ok(level) if is_target(target) => filter.by_target.push((target.into(), level)),
                        _ => ignored.push(directive.into()),
                    },
                }
            }
            (filter, ignored)
        }

        pub(super) fn level_for(&self, target: &str) -> log::LevelFilter {
            let matching = self.by_target.iter().filter(|(prefix, _)| target.starts_with(prefix.as_str()));
            matching.max_by_key(|(prefix, _)| prefix.len()).map_or(self.everything, |&(_, level)| level)
        }

        /// The most verbose level any record may pass at.
        pub(super) fn most(&self) -> log::LevelFilter {
            self.by_target.iter().map(|&(_, level)| level).fold(self.everything, std::cmp::max)
        }
    }

    fn is_target(name: &str) -> bool {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    impl Form {
        /// The journal's form when stderr is the journal's stream (systemd sets
        /// `JOURNAL_STREAM` to its device and inode); `log_time` (`--log-time`) overrides
        /// whether lines carry a timestamp.
        pub(super) fn for_stderr(log_time: Option<bool>) -> Form {
            let journal = std::env::var("JOURNAL_STREAM").is_ok_and(|stream| stderr_is(&stream));
            Form { priority_prefix: journal, timestamp: log_time.unwrap_or(!journal) }
        }

        pub(super) fn write(&self, out: &mut impl Write, record: &log::Record<'_>) -> io::Result<()> {
            if self.priority_prefix {
                write!(out, "<{}>", priority(record.level()))?;
            }
            if self.timestamp {
                write!(out, "{} ", rfc3339(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()))?;
            }
            if self.priority_prefix {
                // The priority says the level; journalctl shows it.
                writeln!(out, "{}: {}", record.target(), record.args())
            } else {
                writeln!(out, "[{:<5} {}] {}", record.level(), record.target(), record.args())
            }
        }
    }

    /// Whether `JOURNAL_STREAM` (`DEVICE:INODE`) names our stderr: a child that inherited
    /// the variable but writes elsewhere (a pipe, a file) must not use the journal's form.
    #[cfg(unix)]
    fn stderr_is(stream: &str) -> bool {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Some((device, inode)) = stream.split_once(':') else { return false };
        let stderr = io::stderr().as_fd().try_clone_to_owned().map(std::fs::File::from);
        let Ok(metadata) = stderr.and_then(|file| file.metadata()) else { return false };
        device.parse() == Ok(metadata.dev()) && inode.parse() == Ok(metadata.ino())
    }

    /// No journal outside unix.
    #[cfg(not(unix))]
    fn stderr_is(_stream: &str) -> bool {
        false
    }

    /// The sd-daemon(3) priority of a level.
    fn priority(level: log::Level) -> u8 {
        match level {
            log::Level::Error => 3,
            log::Level::Warn => 4,
            log::Level::Info => 6,
            log::Level::Debug | log::Level::Trace => 7,
        }
    }

    /// `since_epoch` as an RFC 3339 UTC timestamp with milliseconds:
    /// `2026-12-07T04:26:25.123Z`.
    pub(super) fn rfc3339(since_epoch: Duration) -> String {
        let seconds = since_epoch.as_secs();
        let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
        let (year, month, day) = civil_date(days);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
            since_epoch.subsec_millis()
        )
    }

    /// The Gregorian date `days` after 1970-01-01 (Howard Hinnant's civil_from_days, for
    /// dates on or after the epoch).
    fn civil_date(days: u64) -> (u64, u64, u64) {
        // Shifted to 0000-03-01, so that the leap day ends each 400-year era's year.
        let z = days + 719_468;
        let era = z / 146_097;
        let day_of_era = z % 146_097;
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
        let year = year_of_era + era * 400 + u64::from(month <= 2);
        (year, month, day)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rust_log_directives_override_the_flags_level() {
            use log::LevelFilter::{Debug, Error, Info, Off, Trace, Warn};
            let filter = |rust_log| Filter::new(Info, rust_log);
            let (plain, ignored) = filter(None);
            assert_eq!((plain.level_for("burrowd::server"), plain.most(), ignored.len()), (Info, Info, 0));
            let (chosen, _) = filter(Some("warn, burrowd::session=debug,burrowd::session::live=off"));
            assert_eq!(chosen.level_for("burrowd::server"), Warn);
            assert_eq!(chosen.level_for("burrowd::session"), Debug);
            assert_eq!(chosen.level_for("burrowd::session::live"), Off, "the longest target decides");
            assert_eq!(chosen.most(), Debug);
            let (named, _) = filter(Some("burrowd::net"));
            assert_eq!((named.level_for("burrowd::net::relay"), named.level_for("burrowd")), (Trace, Info));
            let (bad, ignored) = filter(Some("error,loud,x=noisy,=debug,a b"));
            assert_eq!(bad.level_for("burrowd"), Error);
            assert_eq!(bad.level_for("loud"), Trace, "a bare name is a target");
            assert_eq!(ignored, ["x=noisy", "=debug", "a b"]);
        }

        #[test]
        fn timestamps_are_rfc3339_utc() {
            let at = |seconds, millis| rfc3339(Duration::from_secs(seconds) + Duration::from_millis(millis));
            assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
            assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z", "a leap day of a 400-year");
            assert_eq!(at(1_709_251_199, 999), "2024-02-29T23:59:59.999Z");
            assert_eq!(at(1_798_675_200, 0), "2026-12-31T00:00:00.000Z");
            assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z", "2100 is no leap year");
        }

        #[test]
        fn each_level_has_its_sd_daemon_priority() {
            let line = |form: Form, level| {
                let mut out = Vec::new();
                let record =
                    log::Record::builder().level(level).target("burrowd::server").args(format_args!("hi")).build();
                form.write(&mut out, &record).unwrap();
                String::from_utf8(out).unwrap()
            };
            let journal = Form { priority_prefix: true, timestamp: false };
            assert_eq!(line(journal, log::Level::Error), "<3>burrowd::server: hi\n");
            assert_eq!(line(journal, log::Level::Warn), "<4>burrowd::server: hi\n");
            assert_eq!(line(journal, log::Level::Info), "<6>burrowd::server: hi\n");
            assert_eq!(line(journal, log::Level::Debug), "<7>burrowd::server: hi\n");
            assert_eq!(line(journal, log::Level::Trace), "<7>burrowd::server: hi\n");
            let plain = Form { priority_prefix: false, timestamp: false };
            assert_eq!(line(plain, log::Level::Warn), "[WARN  burrowd::server] hi\n");
        }
    }
}

/// Signals that ask something of a running burrowd, on systems that have them.
mod requests {
    /// What a signal asks for.
    #[cfg_attr(not(unix), allow(dead_code))] // no signal sends one where there are none
    pub(super) enum Request {
        /// SIGHUP: read the rules and users files again.
        Reload,
        /// SIGUSR1: write the live-session table to the log.
        ShowSessions,
    }

    /// Blocks SIGHUP and SIGUSR1 in this thread, and so in every thread started after it,
    /// and waits for them with sigwait on a thread of its own; each sends one request.
    #[cfg(unix)]
    pub(super) fn watch() -> crossbeam_channel::Receiver<Request> {
        let (tx, rx) = crossbeam_channel::unbounded();
        // SAFETY: `set` is a valid sigset_t that sigemptyset initialises before use, and
        // pthread_sigmask only reads it (the old mask is not asked for).
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        let watcher = std::thread::Builder::new().name("burrowd-signals".into()).spawn(move || {
            loop {
                let mut received = 0;
                // SAFETY: `set` is the initialised set above; `received` is a valid c_int.
                if unsafe { libc::sigwait(&set, &mut received) } != 0 {
                    continue;
                }
                let request = if received == libc::SIGHUP { Request::Reload } else { Request::ShowSessions };
                if tx.send(request).is_err() {
                    return;
                }
            }
        });
        if let Err(e) = watcher {
            log::warn!("cannot watch for SIGHUP and SIGUSR1 ({e}): reload and the session dump are off");
        }
        rx
    }

    /// Elsewhere no signal asks for these.
    #[cfg(not(unix))]
    pub(super) fn watch() -> crossbeam_channel::Receiver<Request> {
        crossbeam_channel::never()
    }
}
