/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store is closed")]
    Closed,
    #[error("migration {version} failed: {source}")]
    Migration {
        version: usize,
        source: rusqlite::Error,
    },
    #[error("reader task failed: {0}")]
    Join(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
