//! Lotus storage: one [`Store`] over an embedded SQLite file (the default) or PostgreSQL (for
//! scale), through sqlx's `Any` driver so that every query is written once.
//!
//! Portability rules the SQL follows: `$N` placeholders, `INSERT … ON CONFLICT … DO UPDATE
//! SET … = excluded.…`, times as BIGINT Unix milliseconds, JSON as TEXT, flags as BIGINT 0/1
//! and ids as BIGINT. The schema lives in `migrations/sqlite` and `migrations/postgres`, which
//! differ only where the two dialects must (auto-increment ids).
//!
//! Durability: the device plane acknowledges a QoS 1 PUBLISH only after the write that holds
//! it has committed, so a commit must survive the process being killed. PostgreSQL gives that
//! by default. SQLite runs in WAL mode with `synchronous=FULL`: every commit syncs the WAL, so
//! it survives a power loss as well, and the telemetry writer's group commit keeps that to one
//! sync per batch. (`synchronous=NORMAL` would also survive a killed process, since committed
//! WAL frames are in the OS page cache, but could lose the last commits on power loss.)
//!
//! Device and product secrets, plugin secrets and notification channel credentials are
//! encrypted at rest with the node's master key; see [`SecretBox`].
//!
//! Besides the device plane's data, the store keeps the city's operations: rules and their
//! action outbox, alarms, events, disposal workflows and tasks, the message center and
//! notification channels and deliveries; and for the portal, users' contact details and the
//! platform settings (its style).

mod alarms;
mod applications;
mod apps;
mod audit;
mod devices;
mod downlink;
mod error;
mod events;
mod identity;
mod messages;
mod notifications;
mod oidc;
mod plugins;
mod products;
mod rules;
mod secret;
mod settings;
mod shadow;
mod sql;
mod telemetry;
mod topology;
mod types;
mod users;
mod workflows;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, Row};

pub use alarms::{
    ALARM_ACKNOWLEDGED, ALARM_ACTIVE, ALARM_CLEARED, ALARM_LEVEL_LEAST_SEVERE,
    ALARM_LEVEL_MOST_SEVERE, AlarmFilter, AlarmRow, NewAlarm, plugin_suspended_alarm_type,
};
pub use applications::{AppCredentialRow, AppCredentialUpdate};
pub use apps::{
    APP_OFFLINE, APP_ONLINE, AppFilter, AppResources, AppRow, AppUpdate, NewApp, TopicGrant,
};
pub use audit::{AuditRow, AuditVerification, NewAudit};
pub use error::{Result, StorageError};
pub use events::{
    EVENT_CLOSED, EVENT_ISOLATED, EVENT_NEW, EVENT_PROCESSING, EventFilter, EventGroup, EventRow,
    EventWrites, NewEvent, NewTimelineEntry, TimelineRow,
};
pub use identity::{Occupancy, OrgRow, RegionRow, RoleRow, region_is_child};
pub use messages::{MESSAGE_MESSAGE, MESSAGE_NOTIFICATION, MessageRow, NewMessage};
pub use notifications::{
    ChannelRow, DELIVERY_DEAD, DELIVERY_FAILED, DELIVERY_PENDING, DELIVERY_SENT, DeliveryFilter,
    DeliveryRow, NewChannel, NewDelivery, TemplateRow,
};
pub use oidc::{
    CodeRedemption, OidcAccessToken, OidcCode, OidcGrant, OidcLoginState, OidcRefreshToken,
    OidcSigningKeyRow,
};
pub use plugins::{
    DeadLetterFilter, DeadLetterRow, NewDeadLetter, NewPluginVersion, PLUGIN_ACTIVE,
    PLUGIN_PENDING_APPROVAL, PLUGIN_SUSPENDED, PluginArtifact, PluginRow, PluginSecretRow,
    PluginVersionRow,
};
pub use rules::{
    ACTION_DEAD, ACTION_DONE, ACTION_PENDING, NewRule, OutboxRow, RuleRow, RuleStatsDelta,
    RuleStatsRow, RuleUpdate, RuleVersionRow,
};
pub use secret::{Secret, SecretBox};
pub use topology::TopologyLink;
pub use types::*;
pub use users::{DataGrantRow, Disabling, UserFilter};
pub use workflows::{
    NewTask, TASK_APPROVED, TASK_CANCELLED, TASK_OPEN, TASK_REJECTED, TASK_TRANSFERRED,
    TaskAssigneeFilter, TaskRow, WORKFLOW_COMPLETED, WORKFLOW_RUNNING, WorkflowDefinitionRow,
    WorkflowInstanceRow,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite connection waits for a lock held by another process (a backup tool, the
/// `sqlite3` shell) before failing with SQLITE_BUSY. Within the node there is one writer
/// connection, so it never waits on itself.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 10_000;

/// Readers for SQLite. WAL lets them run beside the single writer without blocking it.
const SQLITE_READERS: u32 = 4;

/// Page cache of the SQLite writer, in KiB: the history index is written at one position per
/// device series, and a cache that holds those pages saves a read per row.
const SQLITE_WRITER_CACHE_KIB: i64 = 64 * 1024;

/// How often the background checkpointer copies the WAL into the database file.
const SQLITE_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// WAL length, in pages, past which the checkpointer restarts the log. A PASSIVE checkpoint
/// never catches a writer that commits without pause, so the WAL would otherwise grow without
/// bound; RESTART makes the writer wait for the (short) remainder and then reuses the file.
const SQLITE_WAL_RESTART_PAGES: i64 = 32 * 1024;

/// Connections to PostgreSQL.
const POSTGRES_CONNECTIONS: u32 = 16;

/// How long a query waits for a free connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The back end a database URL names.
    pub fn from_url(database_url: &str) -> Result<Self> {
        let scheme = database_url.split(':').next().unwrap_or_default();
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StorageError::Config(format!(
                "unsupported database URL scheme '{scheme}': use sqlite://path/to/file.db or \
                 postgres://user:password@host/database"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The node's persistent state. Cheap to clone: clones share the connection pools.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// Every write goes here. On SQLite it is one connection: SQLite allows one writer at a
    /// time anyway, and queueing in the pool is cheaper and fairer than SQLITE_BUSY retries.
    write: AnyPool,
    /// Reads. On SQLite a separate pool of read-only connections; on PostgreSQL the same pool
    /// as `write`.
    read: AnyPool,
    /// SQLite: the connection that checkpoints the WAL in the background, so that the writer's
    /// commits never wait for the database file to be written and synced.
    checkpoint: Option<AnyPool>,
    secrets: SecretBox,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database and brings its schema up to date.
    ///
    /// `sqlite://./data/lotus.db` creates the directory and the file when missing;
    /// `sqlite::memory:` gives a private in-memory database (one connection, gone on close);
    /// `postgres://…` connects to an existing database.
    pub async fn open(database_url: &str, secrets: SecretBox) -> Result<Store> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);

        let backend = Backend::from_url(database_url)?;
        let (write, read, checkpoint) = match backend {
            Backend::Sqlite => open_sqlite(database_url).await?,
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(POSTGRES_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(database_url)
                    .await?;
                POSTGRES_MIGRATIONS.run(&pool).await?;
                (pool.clone(), pool, None)
            }
        };
        let inner = Arc::new(Inner {
            backend,
            write,
            read,
            checkpoint,
            secrets,
        });
        if inner.checkpoint.is_some() {
            tokio::spawn(checkpoint_wal(Arc::downgrade(&inner)));
        }
        Ok(Store { inner })
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Checks that the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.read()).await?;
        Ok(())
    }

    /// Waits for running queries and closes every connection.
    pub async fn close(&self) {
        self.inner.write.close().await;
        self.inner.read.close().await;
        if let Some(pool) = &self.inner.checkpoint {
            // Leave a short WAL behind for the next start.
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await;
            pool.close().await;
        }
    }

    fn write(&self) -> &AnyPool {
        &self.inner.write
    }

    fn read(&self) -> &AnyPool {
        &self.inner.read
    }

    fn secrets(&self) -> &SecretBox {
        &self.inner.secrets
    }
}

/// Copies committed WAL frames into the database file until the store is dropped or closed.
/// PASSIVE never blocks the writer or readers; it does what it can and tries again.
async fn checkpoint_wal(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(SQLITE_CHECKPOINT_INTERVAL).await;
        let Some(pool) = inner.upgrade().and_then(|i| i.checkpoint.clone()) else {
            return;
        };
        if pool.is_closed() {
            return;
        }
        let log_pages = match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
        {
            // Columns: busy, pages in the WAL, pages checkpointed.
            Ok(row) => row.try_get::<i64, _>(1).unwrap_or(0),
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                continue;
            }
        };
        if log_pages >= SQLITE_WAL_RESTART_PAGES {
            let started = std::time::Instant::now();
            match sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                .execute(&pool)
                .await
            {
                Ok(_) => metrics::histogram!("lotus_sqlite_wal_restart_seconds")
                    .record(started.elapsed().as_secs_f64()),
                Err(e) => tracing::warn!(error = %e, "WAL restart failed; retrying"),
            }
        }
    }
}

/// Opens the writer (which runs the migrations), the reader pool and the checkpointer of a
/// SQLite database.
async fn open_sqlite(url: &str) -> Result<(AnyPool, AnyPool, Option<AnyPool>)> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StorageError::Config(format!("invalid SQLite URL: {e}")))?;
    let filename = options.get_filename().to_path_buf();
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");

    if in_memory {
        // Every connection to `:memory:` is a new database, so there is exactly one, kept
        // open for the life of the store.
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| Box::pin(sqlite_pragmas(conn, false)))
            .connect(url)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        return Ok((pool.clone(), pool, None));
    }

    create_parent_dir(&filename)?;
    let url = if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    };
    let write = AnyPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // Persistent in the file; needs the exclusive lock, so set it on the writer
                // before any reader exists.
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&mut *conn)
                    .await?;
                // The checkpointer does this work off the commit path.
                sqlx::query("PRAGMA wal_autocheckpoint = 0")
                    .execute(&mut *conn)
                    .await?;
                // After a restart the WAL file is cut back to this size instead of keeping
                // its high-water mark on disk.
                sqlx::query(&format!(
                    "PRAGMA journal_size_limit = {}",
                    SQLITE_WAL_RESTART_PAGES * 4096
                ))
                .execute(&mut *conn)
                .await?;
                sqlx::query(&format!("PRAGMA cache_size = -{SQLITE_WRITER_CACHE_KIB}"))
                    .execute(&mut *conn)
                    .await?;
                sqlite_pragmas(conn, false).await
            })
        })
        .connect(&url)
        .await?;
    SQLITE_MIGRATIONS.run(&write).await?;
    let read = AnyPoolOptions::new()
        .max_connections(SQLITE_READERS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _| Box::pin(sqlite_pragmas(conn, true)))
        .connect(&url)
        .await?;
    let checkpoint = AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _| Box::pin(sqlite_pragmas(conn, false)))
        .connect(&url)
        .await?;
    Ok((write, read, Some(checkpoint)))
}

/// Per-connection SQLite settings; see the crate documentation for why `synchronous=FULL`.
async fn sqlite_pragmas(conn: &mut sqlx::AnyConnection, read_only: bool) -> sqlx::Result<()> {
    let mut pragmas = vec![
        format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"),
        "PRAGMA synchronous = FULL".to_string(),
        "PRAGMA foreign_keys = ON".to_string(),
    ];
    if read_only {
        // A reader that tried to write would take the write lock behind the writer's back.
        pragmas.push("PRAGMA query_only = ON".to_string());
    }
    for pragma in pragmas {
        sqlx::query(&pragma).execute(&mut *conn).await?;
    }
    Ok(())
}

fn create_parent_dir(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            StorageError::io(
                format!("cannot create the database directory {}", dir.display()),
                e,
            )
        }),
        _ => Ok(()),
    }
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
