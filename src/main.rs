//! The `burrowd` binary: command line, logging, signals. Everything else is the library.

use burrowd::Server;
use burrowd::config::cli::{self, Action};
use burrowd::config::summary;
use burrowd::config::units::human_bytes;
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
    init_logging(settings.verbosity);
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
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = signals.send(());
    }) {
        eprintln!("burrowd: cannot install signal handler: {e}");
        return ExitCode::FAILURE;
    }
    let mut server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("burrowd: {e}");
            return ExitCode::FAILURE;
        }
    };

    loop {
        crossbeam_channel::select! {
            recv(signal) -> _ => break,
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
    }
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

fn init_logging(verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-2 => log::LevelFilter::Error,
        -1 => log::LevelFilter::Warn,
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    env_logger::Builder::new().filter_level(level).parse_env("RUST_LOG").init();
}

/// Signals that ask something of a running burrowd, on systems that have them.
mod requests {
    /// What a signal asks for.
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
