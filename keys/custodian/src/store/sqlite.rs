//! The SQLite store: the embedded default. One database file in WAL mode with foreign keys on,
//! `synchronous = FULL` (a committed key or audit entry survives a crash or power loss) and a
//! busy timeout. Writers of one process queue on a fair async mutex, then take SQLite's write
//! lock up front (`BEGIN IMMEDIATE`), so concurrent appends, reservations and rotations queue
//! instead of failing or sleeping in SQLite's busy handler.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use renketsu_keys::seal::KekRing;
use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Mutex;

use super::common::{WriteTx, impl_custodian_store};

/// How long a writer waits for the write lock before failing with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The custodian store on SQLite. Cheap to clone (a connection pool and the KEK ring).
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    keks: Arc<KekRing>,
    /// Writers of this process queue here (FIFO) before `BEGIN IMMEDIATE`; the busy timeout
    /// only handles other processes.
    write_lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("keks", &self.keks)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` — `sqlite:PATH`, `sqlite://PATH` or
    /// `sqlite::memory:` (one private in-memory database, for tests) — and applies the
    /// migrations in `keys/custodian/migrations/sqlite`.
    ///
    /// # Errors
    /// [`StoreError::Database`],
    /// [`StoreError::Migrate`].
    pub async fn connect(url: &str, keks: KekRing) -> Result<Self, StoreError> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Full);
        if !memory {
            // Created 0600 before SQLite opens it (its -wal and -shm files take this mode); a
            // failure here (no such directory) is reported by the connect below.
            let _ = renketsu_keys::private_file::create_private(opts.get_filename());
        }
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists once per connection: keep exactly one.
            .max_connections(if memory { 1 } else { 8 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(opts)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(Self {
            pool,
            keks: Arc::new(keks),
            write_lock: Arc::new(Mutex::new(())),
        })
    }

    /// The connection pool (for maintenance and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection (waits for them to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> Result<WriteTx<Sqlite>, sqlx::Error> {
        let guard = Arc::clone(&self.write_lock).lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx::new(tx, Some(guard)))
    }
}

impl_custodian_store!(SqliteStore, Sqlite, "");
