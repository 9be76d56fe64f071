//! `tidings`: see the library's crate docs for the layout.

use std::future::Future;
use std::io::{self, IsTerminal as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use tidings::cli::{
    self, Cli, CliError, ClientArgs, Command, Io, ServeArgs, TokenCommand, UserCommand,
};
use tidings::config::{self, Config, LogFormat};

/// How long the runtime waits for stray tasks after `serve::run` returned. `run` drains and
/// flushes before it returns, so whatever is left is not worth delaying the exit for.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Config { command } => {
            let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
            let mut io = Io {
                env: config::process_env(),
                stdin: &mut stdin.lock(),
                stdout: &mut stdout.lock(),
                stderr: &mut stderr.lock(),
            };
            exit(cli::run_config(&command, &mut io))
        }
        Command::Feed { command } => {
            let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
            let mut io = Io {
                env: config::process_env(),
                stdin: &mut stdin.lock(),
                stdout: &mut stdout.lock(),
                stderr: &mut stderr.lock(),
            };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    return exit(Err(CliError::Other(format!(
                        "cannot start the async runtime: {err}"
                    ))));
                }
            };
            exit(runtime.block_on(cli::run_feed(&command, &mut io)))
        }
        Command::User { client, command } => admin(&client, Admin::User(command)),
        Command::Token { client, command } => admin(&client, Admin::Token(command)),
    }
}

enum Admin {
    User(UserCommand),
    Token(TokenCommand),
}

/// Runs a `user` or `token` command on a small single-threaded runtime: one request does
/// not need worker threads.
fn admin(args: &ClientArgs, command: Admin) -> ExitCode {
    let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
    let mut io = Io {
        env: config::process_env(),
        stdin: &mut stdin.lock(),
        stdout: &mut stdout.lock(),
        stderr: &mut stderr.lock(),
    };
    let client = match cli::admin_client(args, &io) {
        Ok(client) => client,
        Err(err) => return exit(Err(err)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return exit(Err(CliError::Other(format!(
                "cannot start the async runtime: {err}"
            ))));
        }
    };
    let result = runtime.block_on(async {
        match &command {
            Admin::User(command) => cli::run_user(&client, command, &mut io).await,
            Admin::Token(command) => cli::run_token(&client, command, &mut io).await,
        }
    });
    exit(result)
}

fn exit(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// `tidings serve`: exit 0 after a clean shutdown, 1 when the server fails, 2 when the
/// configuration is wrong (nothing was started).
fn serve(args: &ServeArgs) -> ExitCode {
    let env = config::process_env();
    let config = match cli::serve_config(args, env.clone()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(message) = init_tracing(&config, &env) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidings")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        tidings::serve::run(config, shutdown).await
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole chain: "cannot listen on …: Address already in use".
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: stdout is kept for what the server prints for a person (the first
/// start's admin token and sign-in link). The filter is `TIDINGS_LOG`, else `RUST_LOG`,
/// else `log_level`, so a debugging session needs no config edit.
fn init_tracing(config: &Config, env: &[(String, String)]) -> Result<(), String> {
    let from_env = |name: &str| {
        env.iter()
            .find(|(key, value)| key == name && !value.trim().is_empty())
            .map(|(_, value)| (value.clone(), name.to_owned()))
    };
    let (directive, source) = from_env("TIDINGS_LOG")
        .or_else(|| from_env("RUST_LOG"))
        .unwrap_or_else(|| (config.log_level.clone(), "log_level".to_owned()));
    let filter = tracing_subscriber::EnvFilter::try_new(&directive)
        .map_err(|err| format!("invalid log filter {directive:?} in {source}: {err}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        // Colour codes only for a person at a terminal, not in journald or a log file.
        .with_ansi(io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|err| format!("cannot set up logging: {err}"))
}

/// Resolves on the first SIGINT or SIGTERM. A second one exits at once: draining can take
/// up to `shutdown.drain_timeout`, and an operator pressing Ctrl-C twice wants out. That is
/// safe because everything accepted is already durable in the ingest queue.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed now, not when the future is first polled, so a signal that arrives during
    // start-up is not lost (or fatal by the default action).
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutdown requested; a second signal exits at once"
        );
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::warn!(
                signal = name,
                "second signal: exiting without draining; unfinished work stays queued"
            );
            std::process::exit(130);
        });
    })
}
