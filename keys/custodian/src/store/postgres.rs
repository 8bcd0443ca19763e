//! The PostgreSQL store. Writers lock the rows they build on (`SELECT … FOR UPDATE` on the
//! recipe row for rotations and revocations, on the audit head for appends); quota reservation
//! is one `INSERT … ON CONFLICT DO UPDATE … WHERE` statement.

use std::sync::Arc;
use std::time::Duration;

use renketsu_keys::seal::KekRing;
use sqlx::Postgres;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::common::{WriteTx, impl_custodian_store};

/// The custodian store on PostgreSQL. Cheap to clone (a connection pool and the KEK ring).
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    keks: Arc<KekRing>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("keks", &self.keks)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db` or with `?host=/socket/dir`) and
    /// applies the migrations in `keys/custodian/migrations/postgres`.
    ///
    /// # Errors
    /// [`StoreError::Database`],
    /// [`StoreError::Migrate`].
    pub async fn connect(url: &str, keks: KekRing) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Self {
            pool,
            keks: Arc::new(keks),
        })
    }

    /// The connection pool (for maintenance and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection (waits for them to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> Result<WriteTx<Postgres>, sqlx::Error> {
        Ok(WriteTx::new(self.pool.begin().await?, None))
    }
}

impl_custodian_store!(PgStore, Postgres, " FOR UPDATE");
