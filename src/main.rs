//! The `burrowd` binary: command line, logging, signals. Everything else is the library.

use burrowd::Server;
use burrowd::config::cli::{self, Action};
use burrowd::config::units::human_bytes;
use std::process::ExitCode;

fn main() -> ExitCode {
    let settings = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Action::Run(settings)) => settings,
        Ok(Action::Help) => {
            print!("{}", cli::help());
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

    let _ = signal.recv();
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
