//! The `tidings` binary crate: the command line and the wiring of the service.
//!
//! Layout:
//! - [`config`]: the configuration (`tidings.example.toml`): TOML file, `TIDINGS_…`
//!   environment overlay, validation with errors that name the key.
//! - [`duration`]: the `"500ms"` / `"1h30m"` syntax of durations in the configuration.
//! - [`cli`]: the clap definitions and the short-lived commands (`user`, `token`, `config`).
//! - [`client`]: the admin API client those commands use; the CLI never opens the database.
//! - [`serve`]: `tidings serve`, which starts the store, the avatars, the ingest queue and
//!   the HTTP edge (the other crates) and stops them in order on shutdown.
//!
//! `main.rs` only parses the command line, sets up logging, the runtime and the signal
//! handling, and maps results to exit codes (0 ok, 1 failure, 2 bad configuration or usage).
//! The logic lives in this library so that tests can drive it without a process.

pub mod cli;
pub mod client;
pub mod config;
pub mod duration;
pub mod serve;
