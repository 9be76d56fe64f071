//! The command line: clap definitions and the admin and config commands.
//!
//! `tidings serve` itself is started from `main.rs` (it owns the runtime, logging and
//! signals); everything else here is short-lived and prints for a person or a script.
//! Scripts get the one value they need on stdout (`TOKEN=$(tidings user add alice)`), and
//! everything said for a person goes to stderr.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::client::{self, AdminClient, ClientError};
use crate::config::{Config, ConfigError};

/// The example configuration, also printed by `tidings config example`.
pub const EXAMPLE_CONFIG: &str = include_str!("../../../tidings.example.toml");

/// tidings: a self-hosted notification service.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server in the foreground until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Manage users (through the running server's admin API).
    User {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API tokens (through the running server's admin API).
    Token {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Check or print the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with feeds without a server.
    Feed {
        #[command(subcommand)]
        command: FeedCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum FeedCommand {
    /// Parse a feed file or URL and print the normalized feed and items as JSON.
    Parse {
        /// A file path, `-` for standard input, or an http(s) URL.
        source: String,
        /// The Content-Type to assume for a file (its charset counts, as over HTTP).
        #[arg(long, value_name = "TYPE")]
        content_type: Option<String>,
        /// The URL to resolve a file's relative links against.
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// Allow fetching from private and loopback addresses (refused by default).
        #[arg(long)]
        allow_private_networks: bool,
    },
}

/// `tidings feed parse`: the parser as the server runs it, for checking a feed by hand.
pub async fn run_feed(command: &FeedCommand, io: &mut Io<'_>) -> Result<(), CliError> {
    let FeedCommand::Parse {
        source,
        content_type,
        base_url,
        allow_private_networks,
    } = command;
    let is_url = source.starts_with("http://") || source.starts_with("https://");
    let (body, content_type, url, content_location) = if is_url {
        let fetcher = tidings_sources::fetch::Fetcher::new(tidings_sources::fetch::FetchConfig {
            allow_private_networks: *allow_private_networks,
            ..Default::default()
        })
        .map_err(|e| CliError::Other(e.to_string()))?;
        let r = fetcher
            .fetch(tidings_sources::fetch::FetchRequest::feed(source.as_str()))
            .await
            .map_err(|e| CliError::Other(format!("cannot fetch {source}: {e}")))?;
        if !(200..300).contains(&r.status) {
            return Err(CliError::Other(format!(
                "{source} answered HTTP {}",
                r.status
            )));
        }
        (
            r.body,
            r.content_type.or(content_type.clone()),
            Some(r.final_url),
            r.content_location,
        )
    } else {
        let body = if source == "-" {
            let mut buf = Vec::new();
            io.stdin
                .read_to_end(&mut buf)
                .map_err(|e| CliError::Other(format!("cannot read standard input: {e}")))?;
            buf
        } else {
            std::fs::read(source)
                .map_err(|e| CliError::Other(format!("cannot read {source}: {e}")))?
        };
        (body, content_type.clone(), base_url.clone(), None)
    };
    let parsed = tidings_feed::parse(tidings_feed::FeedInput {
        body: &body,
        content_type: content_type.as_deref(),
        url: url.as_deref(),
        content_location: content_location.as_deref(),
        content_language: None,
    });
    let json = serde_json::to_string_pretty(&parsed)
        .map_err(|e| CliError::Other(format!("cannot encode: {e}")))?;
    write_out(io.stdout, &format!("{json}\n"))
}

/// Flags of `tidings serve`; each overrides the config file and the environment.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); see `tidings config example`.
    #[arg(long, value_name = "FILE", env = "TIDINGS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [config: data_dir, default ./tidings-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [config: http.listen, default 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
}

/// How `user` and `token` commands find the server and the admin credential. The admin
/// credential comes from TIDINGS_ADMIN_TOKEN, else `<data dir>/admin.token`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server URL [default: the URL in <data dir>/server.json, else http://<http.listen>].
    #[arg(long, value_name = "URL", env = "TIDINGS_SERVER", global = true)]
    pub server: Option<String>,
    /// Data directory of the server [config: data_dir, default ./tidings-data].
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Configuration file of the server, to find its data dir and listen address.
    #[arg(long, value_name = "FILE", env = "TIDINGS_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints their new API token on the last line of stdout.
    Add {
        /// Name of the new user.
        name: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Read a password for web sign-in from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Set a user's password for web sign-in, read from the first line of stdin; their web
    /// sessions end.
    Passwd {
        /// Name of the user.
        name: String,
    },
    /// Remove a user; their tokens stop working.
    Remove {
        /// Name of the user.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user; prints it on the last line of stdout.
    Create {
        /// Name of the user the token belongs to.
        user: String,
        /// A note to recognize the token by in `token list`.
        #[arg(long, value_name = "TEXT", default_value = "")]
        label: String,
    },
    /// List tokens (never their secrets), of one user or of everyone.
    List {
        /// Only this user's tokens.
        user: Option<String>,
    },
    /// Revoke a token by the id `token list` shows.
    Revoke {
        /// Token id.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the configuration (file and TIDINGS_ variables); print the
    /// effective configuration as TOML.
    Check {
        /// Configuration file (TOML).
        #[arg(long, value_name = "FILE", env = "TIDINGS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a commented example configuration with every key and its default.
    Example,
}

/// Why a command (other than `serve`) failed; decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Exit code 2, like a usage error: nothing was attempted.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => 2,
            CliError::Client(_) | CliError::Other(_) => 1,
        }
    }
}

/// The process environment and streams a command uses, so tests can supply their own.
pub struct Io<'a> {
    pub env: Vec<(String, String)>,
    pub stdin: &'a mut dyn BufRead,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

impl Io<'_> {
    fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Loads the config for `serve` and applies its flags on top.
pub fn serve_config(args: &ServeArgs, env: Vec<(String, String)>) -> Result<Config, ConfigError> {
    let mut config = Config::load(args.config.as_deref(), env)?;
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Some(listen) = args.http_listen {
        config.http.listen = listen;
    }
    // Flags are values too: `--data-dir ""` must fail like `data_dir = ""` does.
    config.validate()?;
    Ok(config)
}

/// `tidings config …`.
pub fn run_config(command: &ConfigCommand, io: &mut Io<'_>) -> Result<(), CliError> {
    match command {
        ConfigCommand::Check { config } => {
            let loaded = Config::load(config.as_deref(), io.env.clone())?;
            let text = loaded.to_toml_string()?;
            let source = match config {
                Some(path) => format!("{} with defaults and environment", path.display()),
                None => "no config file; defaults and environment".to_owned(),
            };
            write_out(io.stderr, &format!("configuration OK: {source}\n"))?;
            write_out(io.stdout, &text)?;
            if !text.ends_with('\n') {
                write_out(io.stdout, "\n")?;
            }
        }
        ConfigCommand::Example => write_out(io.stdout, EXAMPLE_CONFIG)?,
    }
    Ok(())
}

/// Where `user`/`token` commands send their requests, resolved from flags, config and the
/// data dir.
pub fn admin_client(args: &ClientArgs, io: &Io<'_>) -> Result<AdminClient, CliError> {
    let config = Config::load(args.config.as_deref(), io.env.clone())?;
    let data_dir: &Path = args.data_dir.as_deref().unwrap_or(&config.data_dir);
    // Credential first: without one nothing can work, and its error says what to do.
    let token = client::resolve_admin_token(io.env_var("TIDINGS_ADMIN_TOKEN"), data_dir)?;
    let server = client::resolve_server(args.server.as_deref(), data_dir, &config);
    Ok(AdminClient::new(&server, token)?)
}

/// `tidings user …`.
pub async fn run_user(
    client: &AdminClient,
    command: &UserCommand,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    match command {
        UserCommand::Add {
            name,
            admin,
            password_stdin,
        } => {
            let password = if *password_stdin {
                Some(read_password(io.stdin)?)
            } else {
                None
            };
            let created = client
                .create_user(name, *admin, password.as_deref())
                .await?;
            let role = if created.user.is_admin {
                "administrator"
            } else {
                "user"
            };
            write_out(
                io.stderr,
                &format!(
                    "created {role} {} (id {}); their API token, shown only now:\n",
                    created.user.name, created.user.id
                ),
            )?;
            write_out(io.stdout, &format!("{}\n", created.token))?;
        }
        UserCommand::List => {
            let users = client.list_users().await?;
            write_out(io.stdout, &client::users_table(&users))?;
        }
        UserCommand::Passwd { name } => {
            let password = read_password(io.stdin)?;
            let user = client.set_password(name, &password).await?;
            write_out(
                io.stdout,
                &format!("password set for {} (id {})\n", user.name, user.id),
            )?;
        }
        UserCommand::Remove { name } => {
            let user = client.remove_user(name).await?;
            write_out(
                io.stdout,
                &format!("removed user {} (id {})\n", user.name, user.id),
            )?;
        }
    }
    Ok(())
}

/// `tidings token …`.
pub async fn run_token(
    client: &AdminClient,
    command: &TokenCommand,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    match command {
        TokenCommand::Create { user, label } => {
            let created = client.create_token(user, label).await?;
            write_out(
                io.stderr,
                &format!(
                    "created token {} for {}; the secret, shown only now:\n",
                    created.token.id, created.token.user
                ),
            )?;
            write_out(io.stdout, &format!("{}\n", created.secret))?;
        }
        TokenCommand::List { user } => {
            let tokens = client.list_tokens(user.as_deref()).await?;
            write_out(io.stdout, &client::tokens_table(&tokens))?;
        }
        TokenCommand::Revoke { id } => {
            let revoked = client.revoke_token(*id).await?;
            write_out(io.stdout, &format!("revoked token {revoked}\n"))?;
        }
    }
    Ok(())
}

/// The first line of stdin, without its line ending. Only the ending is removed: spaces
/// may be part of a password.
fn read_password(stdin: &mut dyn BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .map_err(|e| CliError::Other(format!("cannot read the password from stdin: {e}")))?;
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    if password.is_empty() {
        return Err(CliError::Other(
            "stdin held no password (an empty first line)".to_owned(),
        ));
    }
    Ok(password.to_owned())
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Other(format!("cannot write output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::io;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tidings").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_commands() {
        match parse(&["serve", "--data-dir", "/d", "--http-listen", "0.0.0.0:1"]).command {
            Command::Serve(args) => {
                assert_eq!(args.data_dir, Some(PathBuf::from("/d")));
                assert_eq!(args.http_listen, Some("0.0.0.0:1".parse().unwrap()));
            }
            other => panic!("{other:?}"),
        }
        // Client options are accepted before and after the subcommand.
        match parse(&["user", "add", "alice", "--admin", "--server", "http://x:1"]).command {
            Command::User {
                client,
                command:
                    UserCommand::Add {
                        name,
                        admin,
                        password_stdin,
                    },
            } => {
                assert_eq!(name, "alice");
                assert!(admin && !password_stdin);
                assert_eq!(client.server.as_deref(), Some("http://x:1"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["token", "--data-dir", "/d", "list", "bob"]).command {
            Command::Token {
                client,
                command: TokenCommand::List { user },
            } => {
                assert_eq!(client.data_dir, Some(PathBuf::from("/d")));
                assert_eq!(user.as_deref(), Some("bob"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["token", "revoke", "7"]).command,
            Command::Token {
                command: TokenCommand::Revoke { id: 7 },
                ..
            }
        ));
        assert!(Cli::try_parse_from(["tidings", "token", "revoke", "x"]).is_err());
        assert!(Cli::try_parse_from(["tidings", "serve", "--http-listen", "localhost"]).is_err());
    }

    #[test]
    fn serve_flags_override_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "data_dir = \"/file\"\n[http]\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            data_dir: Some("/flag".into()),
            http_listen: Some("127.0.0.1:2".parse().unwrap()),
        };
        let env = vec![("TIDINGS_DATA_DIR".to_owned(), "/env".to_owned())];
        let config = serve_config(&args, env).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/flag"));
        assert_eq!(config.http.listen, "127.0.0.1:2".parse().unwrap());

        let args = ServeArgs {
            config: None,
            data_dir: Some("".into()),
            http_listen: None,
        };
        let err = serve_config(&args, Vec::new()).unwrap_err();
        assert_eq!(err.key(), Some("data_dir"));
    }

    #[test]
    fn config_commands() {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut stdin = io::empty();
        let mut io = Io {
            env: vec![("TIDINGS_AVATARS_SILOS".into(), "3".into())],
            stdin: &mut stdin,
            stdout: &mut stdout,
            stderr: &mut stderr,
        };
        run_config(&ConfigCommand::Check { config: None }, &mut io).unwrap();
        let printed: Config = toml::from_str(std::str::from_utf8(&stdout).unwrap()).unwrap();
        assert_eq!(printed.avatars.silos, 3);

        let mut io = Io {
            env: vec![("TIDINGS_NOPE".into(), "3".into())],
            stdin: &mut stdin,
            stdout: &mut stdout,
            stderr: &mut stderr,
        };
        let err = run_config(&ConfigCommand::Check { config: None }, &mut io).unwrap_err();
        assert_eq!(err.exit_code(), 2);

        let mut example = Vec::new();
        let mut io = Io {
            env: Vec::new(),
            stdin: &mut stdin,
            stdout: &mut example,
            stderr: &mut stderr,
        };
        run_config(&ConfigCommand::Example, &mut io).unwrap();
        assert_eq!(example, EXAMPLE_CONFIG.as_bytes());
    }

    #[test]
    fn password_from_stdin() {
        assert_eq!(
            read_password(&mut &b"s3cret \r\nmore"[..]).unwrap(),
            "s3cret "
        );
        assert_eq!(read_password(&mut &b"pw"[..]).unwrap(), "pw");
        assert!(read_password(&mut &b"\n"[..]).is_err());
        assert!(read_password(&mut &b""[..]).is_err());
    }

    #[test]
    fn missing_credential_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let args = ClientArgs {
            server: None,
            data_dir: Some(dir.path().to_owned()),
            config: None,
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut stdin = io::empty();
        let io = Io {
            env: Vec::new(),
            stdin: &mut stdin,
            stdout: &mut stdout,
            stderr: &mut stderr,
        };
        let err = admin_client(&args, &io).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.to_string(),
            "no admin credential: start `tidings serve` once with this data dir, or set TIDINGS_ADMIN_TOKEN"
        );
    }
}
