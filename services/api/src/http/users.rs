//! Sign-up, login, and the current creator.

use super::error::{ApiError, ApiResult, RateLimited, Unavailable};
use super::extract::{BodyRejections, Creator, CreatorRejections, JsonBody};
use super::rules::{self, DISPLAY_NAME, PASSWORD};
use crate::config::SignupMode;
use crate::ids::new_id;
use crate::mail::Mail;
use crate::store::{now_ms, PendingSignup, StoreError, User};
use crate::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use skylark_auth::{hash_password, hash_stream_key, new_secret, verify_password, Role};
use skylark_telemetry::error::ErrorBody;
use skylark_telemetry::limits::ClientIp;
use utoipa::openapi::schema::Object;
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    #[schema(schema_with = email_schema)]
    pub email: String,
    #[schema(schema_with = password_schema)]
    pub password: String,
    #[schema(schema_with = display_name_schema)]
    pub display_name: String,
}

fn email_schema() -> Object {
    rules::email_schema()
}
fn password_schema() -> Object {
    PASSWORD.schema()
}
fn display_name_schema() -> Object {
    DISPLAY_NAME.schema(false)
}

#[derive(Serialize, ToSchema)]
pub struct SignupResponse {
    pub user: User,
    pub access_token: String,
    pub expires_in: u64,
}

/// The answer to every signup in `verify` mode, whether or not the email has an account.
#[derive(Serialize, ToSchema)]
pub struct SignupAccepted {
    /// Always `verification_sent`.
    pub status: &'static str,
    pub message: &'static str,
}

const SIGNUP_ACCEPTED: SignupAccepted = SignupAccepted {
    status: "verification_sent",
    message: "Check your email for a link to finish creating your account.",
};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The `verify=` token of the mailed link.
    pub token: String,
}

/// How long a mailed signup link works.
const PENDING_SIGNUP_TTL_MS: i64 = 24 * 3600 * 1000;
/// Longest token looked up (they are 43 characters); longer is simply invalid.
const MAX_TOKEN_LEN: usize = 128;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub access_token: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

fn issue(state: &ApiState, user_id: &str) -> (String, u64) {
    let ttl = state.config.access_token_ttl;
    (
        state.tokens.issue(user_id, Role::Creator, vec![], ttl),
        ttl.as_secs(),
    )
}

/// Create a creator account. In `verify` mode (the default) every valid request gets
/// the same `202` and the account exists once the mailed link is followed
/// (`/auth/verify`); in `open` mode it is created at once (`201`, `409` if taken).
#[utoipa::path(post, path = "/auth/signup", tag = "auth", request_body = SignupRequest,
    responses((status = 201, body = SignupResponse, description = "open mode: account created"),
              (status = 202, body = SignupAccepted, description = "verify mode: a mail was sent, whether or not the email has an account"),
              (status = 409, body = ErrorBody, description = "open mode: email taken"),
              BodyRejections, RateLimited, Unavailable))]
pub async fn signup(
    State(state): State<ApiState>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<SignupRequest>,
) -> ApiResult<Response> {
    state
        .signup_limit
        .check(&ip)
        .map_err(ApiError::rate_limited)?;
    let email = rules::check_email(&req.email)?;
    PASSWORD.check(&req.password)?;
    let display_name = DISPLAY_NAME.check(&req.display_name)?;
    match state.config.signup_mode {
        SignupMode::Open => open_signup(&state, email, display_name, req.password).await,
        SignupMode::Verify => {
            verify_signup(&state, email, display_name, req.password).await?;
            Ok((StatusCode::ACCEPTED, Json(SIGNUP_ACCEPTED)).into_response())
        }
    }
}

async fn open_signup(
    state: &ApiState,
    email: String,
    display_name: String,
    password: String,
) -> ApiResult<Response> {
    if state.store.user_by_email(&email).await?.is_some() {
        return Err(ApiError::conflict(
            "an account with this email exists: log in instead",
        ));
    }
    let password_hash = password_work(state, move || hash_password(&password))
        .await?
        .ok_or_else(|| ApiError::internal("password hashing failed: retry"))?;
    let user = User {
        id: new_id("usr"),
        email,
        display_name,
        created_at_ms: now_ms(),
        password_hash,
    };
    state.store.create_user(&user).await.map_err(|e| match e {
        StoreError::Conflict => {
            ApiError::conflict("an account with this email exists: log in instead")
        }
        other => other.into(),
    })?;
    tracing::info!(user_id = %user.id, "creator signed up");
    Ok(created(state, user).into_response())
}

/// `201` with the new account and its first access token.
fn created(state: &ApiState, user: User) -> (StatusCode, Json<SignupResponse>) {
    let (access_token, expires_in) = issue(state, &user.id);
    (
        StatusCode::CREATED,
        Json(SignupResponse {
            user,
            access_token,
            expires_in,
        }),
    )
}

/// Stores a pending signup and mails its link, or, if the email has an account, mails
/// its owner that someone tried. The caller answers the same either way, and the
/// password is hashed either way so the time taken does not tell them apart.
async fn verify_signup(
    state: &ApiState,
    email: String,
    display_name: String,
    password: String,
) -> ApiResult<()> {
    let password_hash = password_work(state, move || hash_password(&password))
        .await?
        .ok_or_else(|| ApiError::internal("password hashing failed: retry"))?;
    if state.store.user_by_email(&email).await?.is_some() {
        state.mailer.send(Mail {
            to: email,
            subject: "Someone tried to create a Skylark account with this address",
            body: format!(
                "Someone (maybe you) tried to create a Skylark account with this email \
                 address, but it already has one.\n\nIf it was you, sign in instead: {}/studio\n\
                 If you forgot your password, ask the operator of this site.\n\n\
                 If it was not you, ignore this mail: nothing was changed.\n",
                state.config.public_url
            ),
        });
        return Ok(());
    }
    let token = new_secret(32);
    let now = now_ms();
    let pending = PendingSignup {
        email: email.clone(),
        display_name,
        password_hash,
        token_hash: hash_stream_key(&token),
        created_at_ms: now,
        expires_at_ms: now + PENDING_SIGNUP_TTL_MS,
    };
    let mail = Mail {
        to: email,
        subject: "Finish creating your Skylark account",
        body: format!(
            "To finish creating your Skylark account, open this link within 24 hours:\n\n\
             {}/studio#verify={token}\n\n\
             If you did not sign up, ignore this mail: no account is created without the link.\n",
            state.config.public_url
        ),
    };
    // Stored after answering: a database write only new emails make would show in the
    // response time. A failure is logged; the person signs up again.
    let state = state.clone();
    tokio::spawn(async move {
        match state.store.put_pending_signup(&pending).await {
            Ok(()) => {
                tracing::info!("signup pending email verification");
                state.mailer.send(mail);
            }
            Err(e) => tracing::error!(error = %e, "storing a pending signup failed: no mail sent"),
        }
    });
    Ok(())
}

/// Finish a signup: the token from the mailed link creates the account.
#[utoipa::path(post, path = "/auth/verify", tag = "auth", request_body = VerifyRequest,
    responses((status = 201, body = SignupResponse, description = "account created"),
              (status = 404, body = ErrorBody, description = "`invalid_or_expired_token`: unknown, used or expired link; sign up again"),
              BodyRejections, RateLimited, Unavailable))]
pub async fn verify(
    State(state): State<ApiState>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<VerifyRequest>,
) -> ApiResult<(StatusCode, Json<SignupResponse>)> {
    state
        .verify_limit
        .check(&ip)
        .map_err(ApiError::rate_limited)?;
    let token = req.token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::invalid_token());
    }
    let pending = state
        .store
        .take_pending_signup(&hash_stream_key(token))
        .await?
        .filter(|p| p.expires_at_ms > now_ms())
        .ok_or_else(ApiError::invalid_token)?;
    let user = User {
        id: new_id("usr"),
        email: pending.email,
        display_name: pending.display_name,
        created_at_ms: now_ms(),
        password_hash: pending.password_hash,
    };
    // Registered since (another link, or open mode): the same answer as a stale link.
    state.store.create_user(&user).await.map_err(|e| match e {
        StoreError::Conflict => ApiError::invalid_token(),
        other => other.into(),
    })?;
    tracing::info!(user_id = %user.id, "creator signed up (email verified)");
    Ok(created(&state, user))
}

/// Exchange email and password for an access token.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse, description = "signed in"),
              (status = 401, body = ErrorBody, description = "wrong email or password"),
              BodyRejections, RateLimited, Unavailable))]
pub async fn login(
    State(state): State<ApiState>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    state
        .login_limit
        .check(&ip)
        .map_err(ApiError::rate_limited)?;
    let wrong = || ApiError::unauthorized("wrong email or password");
    let email = req.email.trim().to_lowercase();
    if email.len() > 254 || req.password.len() > 1024 {
        return Err(wrong());
    }
    // Per account too: guessing one creator's password from many addresses is slowed
    // the same way (the bucket is kept for unknown emails as well, revealing nothing).
    state
        .login_account_limit
        .check(&email)
        .map_err(ApiError::rate_limited)?;
    let user = state.store.user_by_email(&email).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = req.password;
    let ok = password_work(&state, move || match hash {
        Some(h) => verify_password(&password, &h),
        None => {
            // Same work for unknown emails, so timing does not reveal accounts.
            let _ = hash_password(&password);
            false
        }
    })
    .await?
    .unwrap_or(false);
    let user = match (ok, user) {
        (true, Some(u)) => u,
        _ => return Err(wrong()),
    };
    let (access_token, expires_in) = issue(&state, &user.id);
    Ok(Json(LoginResponse {
        access_token,
        expires_in,
    }))
}

/// The signed-in creator.
#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = User, description = "the creator"), CreatorRejections, Unavailable))]
pub async fn me(State(state): State<ApiState>, Creator(c): Creator) -> ApiResult<Json<User>> {
    state
        .store
        .user_by_id(&c.sub)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::unauthorized("this account no longer exists: sign up again"))
}

/// How long a request waits for a password-hashing slot before it is told to retry.
const PASSWORD_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs argon2 work `f` off the async workers, at most a core's worth at once; `None`
/// if the blocking task failed. A request that can't get a slot in time gets a `503`.
async fn password_work<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, ApiError> {
    let permit = tokio::time::timeout(
        PASSWORD_QUEUE_WAIT,
        state.password_work.clone().acquire_owned(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .ok_or_else(|| {
        metrics::counter!("skylark_api_password_queue_full_total").increment(1);
        ApiError::busy("too many sign-ins at once: retry in a few seconds", 2)
    })?;
    let out = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .ok();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApiConfig, ApiState};

    #[tokio::test]
    async fn password_work_waits_for_a_slot_then_says_retry() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::Store::connect(&url).await.unwrap();
        let config = ApiConfig::for_tests(&url, "127.0.0.1:0".parse().unwrap());
        let bus = skylark_bus::connect(None).await.unwrap();
        let state = ApiState::new(store, config, bus);
        assert_eq!(password_work(&state, || 7).await.unwrap(), Some(7));
        // Every slot busy: the request waits PASSWORD_QUEUE_WAIT, then gets a 503.
        let slots = state.password_work.available_permits() as u32;
        let held = state.password_work.clone().acquire_many_owned(slots).await;
        let err = password_work(&state, || 7).await.unwrap_err();
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.retry_after_s, Some(2));
        drop(held);
        assert_eq!(password_work(&state, || 8).await.unwrap(), Some(8));
    }
}
