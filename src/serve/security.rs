//! What every request passes before a handler sees it: the bearer token (when the server
//! has one), the `Host` check that keeps DNS-rebinding pages out of a loopback server, and
//! the same-origin rule for state-changing requests (no cross-site form posts from
//! another tab).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The cookie the page carries the token in once `/?token=` set it.
const COOKIE: &str = "ditail_token";

/// Compares without an early exit, so the time taken does not reveal the prefix matched.
/// Who may ask: what every request is checked against.
#[derive(Clone, Debug)]
pub struct Access {
    /// The bearer token every request must carry, if any.
    pub token: Option<String>,
    /// Whether the server listens on a loopback address only (then the `Host` header must
    /// name one too: a page from another site cannot reach it by DNS rebinding).
    pub loopback: bool,
}

fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token a request carries: `Authorization: Bearer T` or the cookie.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(auth) = header_str(headers, header::AUTHORIZATION)
        && let Some(t) = auth.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_string());
    }
    header_str(headers, header::COOKIE)?
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The `token` query parameter of a request.
fn query_token(req: &Request) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v.to_string())
}

/// Whether a `Host` header names a loopback address (any port).
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1") || name.starts_with("127.")
}

fn refuse(status: StatusCode, msg: &str) -> Response {
    ApiError(status, msg.to_string()).into_response()
}

/// The middleware.
pub async fn guard(State(app): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = header_str(headers, header::HOST).unwrap_or("");
    if app.loopback && !loopback_host(host) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this server answers only to localhost (Host header)",
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let cross_site = header_str(headers, header::ORIGIN)
            .is_some_and(|o| o != format!("http://{host}") && o != format!("https://{host}"))
            || header_str(headers, header::HeaderName::from_static("sec-fetch-site"))
                .is_some_and(|s| s == "cross-site" || s == "same-site");
        if cross_site {
            return refuse(StatusCode::FORBIDDEN, "cross-origin requests are refused");
        }
    }
    if let Some(token) = &app.token {
        if req.uri().path() == "/"
            && let Some(q) = query_token(&req)
            && same_secret(&q, token)
        {
            // The link printed at start-up: keep the token in a cookie the page's own
            // requests (event streams included) carry, and drop it from the address bar.
            let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, cookie),
                    (header::LOCATION, "/".to_string()),
                ],
            )
                .into_response();
        }
        if !presented_token(headers).is_some_and(|t| same_secret(&t, token)) {
            if req.uri().path() == "/" {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::response::Html(
                        "<!doctype html><title>ditail</title><p>This ditail server needs its \
                         token: open the link <code>ditail serve</code> printed \
                         (<code>http://…/?token=…</code>).</p>",
                    ),
                )
                    .into_response();
            }
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this server needs its token: `Authorization: Bearer TOKEN`, or open the link it printed",
            );
        }
    }
    let mut response = next.run(req).await;
    harden(response.headers_mut());
    response
}

/// Headers that keep the page to its own scripts (a prompt or file name shown in it can
/// never run as code), out of other sites' frames, and its types unguessed.
fn harden(headers: &mut HeaderMap) {
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in set {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost:7860",
            "127.0.0.1:1",
            "[::1]:80",
            "localhost",
            "127.1.2.3:5",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "evil.example:7860",
            "192.168.1.2:7860",
            "",
            "localhost.evil.com:1",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
