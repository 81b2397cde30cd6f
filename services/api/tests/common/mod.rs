//! Test databases: a fresh SQLite file, or a fresh schema in the real PostgreSQL.
#![allow(dead_code)]

pub mod smtp;

use skylark_api::store::Store;

pub struct TestDb {
    pub url: String,
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        TestDb {
            url,
            store,
            _dir: Some(dir),
            pg_schema: None,
        }
    }

    /// A new schema in the PostgreSQL at `SKYLARK_TEST_DATABASE_URL` (default the local
    /// `test` database). `None` (with the reason printed) when it is unreachable outside CI;
    /// in CI (`CI=true`) an unreachable database fails the test.
    pub async fn postgres() -> Option<TestDb> {
        let base = std::env::var("SKYLARK_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let admin = match Store::connect(&base).await {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("PostgreSQL at {base} unreachable: {e}");
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{msg} (CI=true: PostgreSQL tests must run)");
                }
                eprintln!("SKIPPED: {msg}");
                return None;
            }
        };
        let schema = format!(
            "t_{}",
            skylark_auth::new_secret(9)
                .to_lowercase()
                .replace(['-', '_'], "x")
        );
        admin
            .execute_raw(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        admin.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        Some(TestDb {
            url,
            store,
            _dir: None,
            pg_schema: Some((base, schema)),
        })
    }

    pub async fn cleanup(self) {
        self.store.close().await;
        if let Some((base, schema)) = self.pg_schema {
            if let Ok(admin) = Store::connect(&base).await {
                let _ = admin
                    .execute_raw(&format!("DROP SCHEMA {schema} CASCADE"))
                    .await;
                admin.close().await;
            }
        }
    }
}
