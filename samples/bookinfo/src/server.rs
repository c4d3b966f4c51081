//! The HTTP server (HTTP/1.1 keep-alive and h2c on one port), graceful shutdown and the shared response helpers.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::client::Upstream;
use crate::config::{Config, Service};
use crate::json::Value;

/// Response body type of every handler.
pub type Body = Full<Bytes>;

/// How long open connections get to finish their requests after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (for example out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One Bookinfo service: its configuration and its client for downstream calls.
#[derive(Clone, Debug)]
pub struct App {
    /// The configuration the service runs with.
    pub config: Arc<Config>,
    /// Client for calls to other services.
    pub upstream: Upstream,
}

impl App {
    /// Builds the service described by `config`.
    pub fn new(config: Config) -> Self {
        let upstream = Upstream::new(config.proxy.clone());
        App {
            config: Arc::new(config),
            upstream,
        }
    }

    /// Answers one request; never fails (errors become status codes).
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match self.config.service {
            Service::Productpage => crate::productpage::handle(self, req).await,
            Service::Details => crate::details::handle(req.method(), req.uri().path()),
            Service::Reviews => crate::reviews::handle(self, &req).await,
            Service::Ratings => crate::ratings::handle(req.method(), req.uri().path()),
        }
    }
}

/// Serves `config`'s service on `listener` until `shutdown` completes, then lets open requests finish (up to a few
/// seconds) and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let app = App::new(config);
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        eprintln!("bookinfo: accept failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let builder = builder.clone();
                let mut stop = stop_rx.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(app.handle(req).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        // The guard `wait_for` returns must not live across the drain below, so drop it here.
                        _ = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            // Reap finished connection tasks so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.abort_all();
    }
    Ok(())
}

/// A response with `body` and `content_type`.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A JSON response.
pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

/// A JSON response whose body was produced elsewhere (a downstream service).
pub fn json_raw(status: StatusCode, body: Bytes) -> Response<Body> {
    respond(status, "application/json", body)
}

/// An HTML response.
pub fn html(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", body)
}

/// `404 Not Found` for any unknown path.
pub fn not_found() -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        &Value::object([("error", Value::str("not found"))]),
    )
}

/// `405 Method Not Allowed`.
pub fn method_not_allowed() -> Response<Body> {
    json(
        StatusCode::METHOD_NOT_ALLOWED,
        &Value::object([("error", Value::str("method not allowed"))]),
    )
}

/// `400 Bad Request` for a product id that is not a number.
pub fn bad_id() -> Response<Body> {
    json(
        StatusCode::BAD_REQUEST,
        &Value::object([("error", Value::str("product id must be a number"))]),
    )
}

/// `302 Found` to `location`, optionally setting a cookie.
pub fn redirect(location: &'static str, cookie: Option<HeaderValue>) -> Response<Body> {
    let mut resp = respond(
        StatusCode::FOUND,
        "text/plain; charset=utf-8",
        "redirecting\n",
    );
    resp.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(location));
    if let Some(cookie) = cookie {
        resp.headers_mut().append(SET_COOKIE, cookie);
    }
    resp
}

/// Parses the id after `prefix` in `path` (`/details/7` with prefix `/details/`): `None` when the path does not
/// match, `Some(None)` when it matches but the id is not a number.
pub fn product_id(path: &str, prefix: &str) -> Option<Option<i64>> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    Some(rest.parse::<i64>().ok().filter(|id| *id >= 0))
}

/// The JSON body of every `/health` endpoint.
pub fn health(service: Service) -> Response<Body> {
    json(
        StatusCode::OK,
        &Value::object([
            ("status", Value::str("healthy")),
            ("service", Value::str(service.name())),
        ]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_ids() {
        assert_eq!(product_id("/details/7", "/details/"), Some(Some(7)));
        assert_eq!(product_id("/details/x", "/details/"), Some(None));
        assert_eq!(product_id("/details/-1", "/details/"), Some(None));
        assert_eq!(product_id("/details/", "/details/"), None);
        assert_eq!(product_id("/details/1/2", "/details/"), None);
        assert_eq!(product_id("/ratings/1", "/details/"), None);
    }
}
