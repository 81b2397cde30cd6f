//! Signup in `verify` mode, on SQLite and PostgreSQL, mail delivered over real SMTP to
//! a sink: signup and login answer alike whether or not an email has an account, and
//! only the mailed link creates one.

mod common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use common::smtp::SmtpSink;
use common::TestDb;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use skylark_api::store::{now_ms, PendingSignup, User};
use skylark_api::{ApiConfig, ApiState, MailConfig, SignupMode};
use std::time::Duration;
use tower::ServiceExt;

struct App {
    router: Router,
    db: TestDb,
    sink: SmtpSink,
}

async fn app(db: TestDb) -> App {
    let sink = SmtpSink::start().await;
    let mut config = ApiConfig::for_tests(&db.url, "127.0.0.1:0".parse().unwrap());
    config.signup_mode = SignupMode::Verify;
    config.mail = MailConfig::parse(&sink.url, "Skylark <no-reply@skylark.test>").unwrap();
    let bus = skylark_bus::connect(None).await.unwrap();
    let state = ApiState::new(db.store.clone(), config, bus);
    App {
        router: skylark_api::router(state),
        db,
        sink,
    }
}

impl App {
    async fn post(&self, uri: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, uri: &str, token: &str) -> StatusCode {
        let req = Request::builder()
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        self.router.clone().oneshot(req).await.unwrap().status()
    }

    async fn signup(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/api/v1/auth/signup",
            None,
            json!({"email": email, "password": password, "display_name": "Dee"}),
        )
        .await
    }

    async fn login(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    async fn verify(&self, token: &str) -> (StatusCode, Value) {
        self.post("/api/v1/auth/verify", None, json!({ "token": token }))
            .await
    }

    /// The token of the next mail's signup link; the mail must be to `to`.
    async fn link_token(&mut self, to: &str) -> String {
        let m = self.sink.next().await;
        assert_eq!(m.to, vec![to.to_string()], "{}", m.data);
        link_token(&m.data).unwrap_or_else(|| panic!("no signup link in:\n{}", m.data))
    }
}

/// `TOKEN` of `…/studio#verify=TOKEN` in a mail.
fn link_token(mail: &str) -> Option<String> {
    let (_, rest) = mail.split_once("http://127.0.0.1:8080/studio#verify=")?;
    let t: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (t.len() >= 43).then_some(t)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

async fn suite(db: TestDb) {
    let mut app = app(db).await;
    let pw = "hunter2hunter2";

    // A new email: 202, a link by mail, no account yet.
    let (s_new, body_new) = app.signup("Dee@Example.com", pw).await;
    assert_eq!(s_new, StatusCode::ACCEPTED, "{body_new}");
    assert_eq!(body_new["status"], "verification_sent");
    let token = app.link_token("dee@example.com").await;
    assert_eq!(app.db.store.counts().await.unwrap().0, 0);
    assert_eq!(app.db.store.pending_signup_count().await.unwrap(), 1);

    // Login of an email that only has a pending signup: exactly a wrong password.
    let pending = app.login("dee@example.com", pw).await;
    assert_eq!(pending.0, StatusCode::UNAUTHORIZED);
    assert_eq!(pending, app.login("nobody@example.com", pw).await);

    // The link creates the account and signs in.
    let (s, v) = app.verify(&token).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["user"]["email"], "dee@example.com");
    assert_eq!(v["user"]["display_name"], "Dee");
    let access = v["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/v1/me", &access).await, StatusCode::OK);
    assert_eq!(app.db.store.pending_signup_count().await.unwrap(), 0);
    let (s, v) = app.login("dee@example.com", pw).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        app.get("/api/v1/me", v["access_token"].as_str().unwrap())
            .await,
        StatusCode::OK
    );

    // The registered email again: the same answer as a new one, a mail saying someone
    // tried (no link), and nothing changed.
    let (s_taken, body_taken) = app.signup("dee@example.com", "another-password").await;
    assert_eq!((s_taken, &body_taken), (s_new, &body_new));
    let m = app.sink.next().await;
    assert_eq!(m.to, vec!["dee@example.com".to_string()]);
    assert!(m.data.contains("already has one"), "{}", m.data);
    assert!(link_token(&m.data).is_none(), "{}", m.data);
    assert_eq!(app.db.store.counts().await.unwrap().0, 1);
    assert_eq!(app.db.store.pending_signup_count().await.unwrap(), 0);
    assert_eq!(app.login("dee@example.com", pw).await.0, StatusCode::OK);
    assert_eq!(
        app.login("dee@example.com", "another-password").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Used, garbage, over-long and empty tokens: 404 with what to do.
    for bad in [token.as_str(), "garbage", &"x".repeat(500), ""] {
        let (s, v) = app.verify(bad).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{bad}: {v}");
        assert_eq!(code(&v), "invalid_or_expired_token");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sign up again"));
    }

    // An expired link.
    let expired = "expired-token-expired-token-expired-token-x";
    app.db
        .store
        .put_pending_signup(&PendingSignup {
            email: "late@example.com".into(),
            display_name: "Late".into(),
            password_hash: skylark_auth::hash_password(pw),
            token_hash: skylark_auth::hash_stream_key(expired),
            created_at_ms: now_ms() - 25 * 3600 * 1000,
            expires_at_ms: now_ms() - 3600 * 1000,
        })
        .await
        .unwrap();
    let (s, v) = app.verify(expired).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::NOT_FOUND, "invalid_or_expired_token")
    );
    assert_eq!(
        app.login("late@example.com", pw).await.0,
        StatusCode::UNAUTHORIZED
    );

    // A newer signup replaces the older: only the newest link works.
    assert_eq!(
        app.signup("eve@example.com", pw).await.0,
        StatusCode::ACCEPTED
    );
    let first = app.link_token("eve@example.com").await;
    assert_eq!(
        app.signup("eve@example.com", pw).await.0,
        StatusCode::ACCEPTED
    );
    let second = app.link_token("eve@example.com").await;
    assert_ne!(first, second);
    assert_eq!(app.verify(&first).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.verify(&second).await.0, StatusCode::CREATED);

    // Registered in between (e.g. while the link sat in a mailbox): the generic 404.
    assert_eq!(
        app.signup("fay@example.com", pw).await.0,
        StatusCode::ACCEPTED
    );
    let token = app.link_token("fay@example.com").await;
    app.db
        .store
        .create_user(&User {
            id: "usr_meanwhile".into(),
            email: "fay@example.com".into(),
            display_name: "Fay".into(),
            created_at_ms: now_ms(),
            password_hash: skylark_auth::hash_password("other-password"),
        })
        .await
        .unwrap();
    let (s, v) = app.verify(&token).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::NOT_FOUND, "invalid_or_expired_token")
    );
    assert_eq!(app.db.store.counts().await.unwrap().0, 3);

    // Invalid input is still answered as such, and sends nothing.
    let (s, _) = app.signup("not-an-email", pw).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    app.sink.none_within(Duration::from_millis(300)).await;

    app.db.cleanup().await;
}

#[tokio::test]
async fn verify_signup_on_sqlite() {
    suite(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn verify_signup_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    suite(db).await;
}
