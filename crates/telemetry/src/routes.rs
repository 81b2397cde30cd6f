//! Which operations a router answers and which an OpenAPI document lists, so a test
//! can hold each service's routes to its document (a route added without its operation
//! fails the test instead of going undocumented).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use std::collections::BTreeSet;
use tower::ServiceExt;

/// `(METHOD, path)`, the path in OpenAPI's template form (`/rooms/{id}`).
pub type Operation = (String, String);

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// The operations `router` answers on paths under `prefix`: each routed path, with
/// each method that does not get `405`. Axum lists no routes, but a router's `Debug`
/// output names every path (its routes first, then those of nested fallbacks, which
/// are not routes); nothing is found if that changes, which fails loudly.
pub async fn answered(router: &Router, prefix: &str) -> BTreeSet<Operation> {
    let dump = format!("{router:?}");
    let routes = dump.split("fallback_router").next().unwrap_or_default();
    let quoted = format!("\"{prefix}");
    let paths: BTreeSet<&str> = routes
        .match_indices(&quoted)
        .filter_map(|(at, _)| {
            let rest = &routes[at + 1..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect();
    let mut out = BTreeSet::new();
    for path in paths {
        let uri = concrete(path);
        for method in METHODS {
            let req = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .body(Body::empty())
                .expect("a request from a routed path");
            let status = match router.clone().oneshot(req).await {
                Ok(r) => r.status(),
                Err(never) => match never {},
            };
            if status != StatusCode::METHOD_NOT_ALLOWED {
                out.insert((method.to_string(), path.to_string()));
            }
        }
    }
    out
}

/// `path` with each `{param}` (and `{*rest}`) filled in.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                out.push('x');
                rest = &rest[open + close + 1..];
            }
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The operations an OpenAPI document (as JSON) lists.
pub fn documented(doc: &serde_json::Value) -> BTreeSet<Operation> {
    let mut out = BTreeSet::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method.as_str().to_lowercase()).is_some() {
                    out.insert((method.to_string(), path.clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};

    #[tokio::test]
    async fn finds_nested_routes_and_their_methods() {
        let api = Router::new()
            .route("/rooms", get(|| async {}).post(|| async {}))
            .route("/rooms/{id}", axum::routing::delete(|| async {}))
            .fallback(|| async { StatusCode::NOT_FOUND });
        let router = Router::new()
            .nest("/api/v1", api)
            .route("/other", post(|| async {}));
        let got = answered(&router, "/api/v1").await;
        let want: BTreeSet<Operation> = [
            ("GET", "/api/v1/rooms"),
            ("POST", "/api/v1/rooms"),
            ("DELETE", "/api/v1/rooms/{id}"),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
        assert_eq!(got, want);
        assert_eq!(concrete("/a/{id}/b/{*rest}"), "/a/x/b/x");
    }

    #[test]
    fn lists_documented_operations() {
        let doc = serde_json::json!({"paths": {"/a": {"get": {}, "post": {}}, "/b/{id}": {"delete": {}}}});
        assert_eq!(documented(&doc).len(), 3);
    }
}
