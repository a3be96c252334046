//! Runs a test body on both back ends: `on_both_backends!(name, …)` turns each
//! `async fn name(&Store, url)` into a module with a `sqlite` test on a fresh SQLite file and a
//! `postgres` test on a fresh PostgreSQL server. PostgreSQL comes from Debian's package through
//! the test harness; when it is missing the tests fail with the install command rather than skip.

use lotus_storage::{Backend, SecretBox, Store};
use lotus_test_harness::postgres::TestPostgres;

/// A store on a fresh database, and what keeps that database alive.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    _keep: Keep,
}

enum Keep {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] TestPostgres),
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        // A directory that does not exist yet: open must create it.
        let url = format!("sqlite://{}/data/lotus.db", dir.path().display());
        let store = Store::open(&url, SecretBox::random()).await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        TestDb {
            store,
            url,
            _keep: Keep::Dir(dir),
        }
    }

    pub async fn postgres() -> TestDb {
        let pg = TestPostgres::start().expect("a test PostgreSQL server");
        let url = pg.url.clone();
        let store = Store::open(&url, SecretBox::random()).await.unwrap();
        assert_eq!(store.backend(), Backend::Postgres);
        TestDb {
            store,
            url,
            _keep: Keep::Postgres(pg),
        }
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let db = crate::backends::TestDb::sqlite().await;
                super::$name(&db.store, &db.url).await;
                db.store.close().await;
            }

            #[tokio::test]
            async fn postgres() {
                let db = crate::backends::TestDb::postgres().await;
                super::$name(&db.store, &db.url).await;
                db.store.close().await;
            }
        }
    )*};
}
