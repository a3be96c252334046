//! Storage errors. `NotFound` and `Conflict` carry a sentence meant for the API caller; the
//! others are operational and are logged rather than shown.

/// What went wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change contradicts what is stored (duplicate name, product still in use, …).
    #[error("{0}")]
    Conflict(String),
    /// A caller passed a value the storage layer cannot use (unknown status filter, …).
    #[error("{0}")]
    Invalid(String),
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Sealing or opening a secret failed, or the master key is unusable.
    #[error("{0}")]
    Crypto(String),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The database URL or its location is unusable.
    #[error("{0}")]
    Config(String),
    /// A file next to the database (key file, data directory) could not be used.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A stored value no longer parses (edited by hand, or written by a newer version).
    #[error("corrupt data in the database: {0}")]
    Corrupt(String),
}

impl StorageError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Is this a uniqueness violation reported by the database?
    pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
    }

    /// Is this a foreign-key violation reported by the database?
    pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
    }
}

/// Results of the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
