//! Test support: a fresh, empty database for each test. SQLite by default; a new
//! PostgreSQL database on the server that `NURTURED_TEST_POSTGRES` names when that is
//! set (`scripts/test` starts a private server and runs the suite on both).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

/// The variable naming the PostgreSQL server tests run against, e.g.
/// `postgres://postgres@127.0.0.1:54329/postgres`.
pub const POSTGRES_ENV: &str = "NURTURED_TEST_POSTGRES";

/// The PostgreSQL server tests run against, if any.
pub fn postgres_server() -> Option<String> {
    std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty())
}

/// A URL of a new, empty database: a PostgreSQL database of its own when
/// [`POSTGRES_ENV`] is set, else a SQLite file `nurtured.db` in `dir`.
pub fn fresh_database_url(dir: &Path) -> String {
    match postgres_server() {
        Some(server) => fresh_postgres(&server),
        None => format!("sqlite://{}", dir.join("nurtured.db").display()),
    }
}

/// Creates a database with a name of its own on `server` and returns its URL. Works
/// inside and outside an async runtime (it runs on a thread of its own).
pub fn fresh_postgres(server: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "nurtured_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let server = server.to_string();
    let create = name.clone();
    let url = with_database(&server, &name);
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&server)
                    .await
                    .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={server}: {e}"));
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{create}\"")))
                    .execute(&mut conn)
                    .await
                    .expect("create a test database");
                let _ = conn.close().await;
            })
    })
    .join()
    .expect("creating the test database");
    url
}

/// `server` with its database part replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server, String::new()),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{name}{query}", &base[..host_end])
}

/// Runs `sql` (one or more statements, values written as literals, so the text is the
/// same on both backends) on the database at `url`, outside the daemon: tests use it to
/// seed a database.
pub async fn execute(url: &str, sql: String) -> Result<(), sqlx::Error> {
    if crate::store::is_postgres_url(url) {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
        conn.close().await
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
        conn.close().await
    }
}

/// The first column of the first row of `sql` as a number (see [`execute`]).
pub async fn query_i64(url: &str, sql: String) -> Result<i64, sqlx::Error> {
    if crate::store::is_postgres_url(url) {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok(n)
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok(n)
    }
}

/// `text` as an SQL string literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://u:p@h:5/postgres", "x"),
            "postgres://u:p@h:5/x"
        );
        assert_eq!(with_database("postgres://h:5", "x"), "postgres://h:5/x");
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
    }
}
