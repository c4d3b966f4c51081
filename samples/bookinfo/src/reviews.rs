//! The reviews service: two reviews, with stars from ratings in v2 (black) and v3 (red).

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};

use crate::config::{Service, Version};
use crate::headers::propagate;
use crate::json::{self, Value};
use crate::server::{bad_id, health, json, method_not_allowed, not_found, product_id, App, Body};

/// v2's patience with ratings.
pub const V2_RATINGS_TIMEOUT: Duration = Duration::from_secs(10);
/// v3's patience with ratings; shorter than v2's, which the timeout tasks rely on.
pub const V3_RATINGS_TIMEOUT: Duration = Duration::from_millis(2500);
/// Message in a rating when ratings could not be reached.
pub const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// The reviews each product has: reviewer and text.
const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "Two pairs of twins and not one straight answer: a quick, clever farce that stays funny to the last scene.",
    ),
    (
        "Reviewer2",
        "Good fun from start to finish, though it has less to say than the plays Shakespeare wrote later.",
    ),
];

/// How this version decorates reviews with ratings.
fn ratings_mode(version: Version) -> Option<(Duration, &'static str)> {
    match version {
        Version::V1 => None,
        Version::V2 => Some((V2_RATINGS_TIMEOUT, "black")),
        Version::V3 => Some((V3_RATINGS_TIMEOUT, "red")),
    }
}

/// Routes `GET /reviews/<id>` and `GET /health`.
pub async fn handle<B>(app: &App, req: &Request<B>) -> Response<Body> {
    let path = req.uri().path();
    if path == "/health" {
        return health(Service::Reviews);
    }
    let Some(id) = product_id(path, "/reviews/") else {
        return not_found();
    };
    if req.method() != Method::GET {
        return method_not_allowed();
    }
    let Some(id) = id else {
        return bad_id();
    };

    let ratings = match ratings_mode(app.config.version) {
        None => None,
        Some((timeout, color)) => {
            let stars = fetch_ratings(app, id, req, timeout).await;
            Some((stars, color))
        }
    };
    let reviews = REVIEWS
        .iter()
        .map(|(reviewer, text)| {
            let mut review = vec![
                ("reviewer".to_string(), Value::str(*reviewer)),
                ("text".to_string(), Value::str(*text)),
            ];
            if let Some((stars, color)) = &ratings {
                let rating = match stars
                    .as_ref()
                    .and_then(|s| s.get(reviewer))
                    .and_then(Value::as_f64)
                {
                    Some(n) => {
                        Value::object([("stars", Value::Number(n)), ("color", Value::str(*color))])
                    }
                    None => Value::object([("error", Value::str(RATINGS_UNAVAILABLE))]),
                };
                review.push(("rating".to_string(), rating));
            }
            Value::Object(review)
        })
        .collect();
    json(
        StatusCode::OK,
        &Value::object([
            ("id", Value::str(id.to_string())),
            ("podname", Value::str(app.config.workload.clone())),
            ("clustername", Value::str("null")),
            ("reviews", Value::Array(reviews)),
        ]),
    )
}

/// The `ratings` object from the ratings service, or `None` when it could not be had in time.
async fn fetch_ratings<B>(
    app: &App,
    id: i64,
    req: &Request<B>,
    timeout: Duration,
) -> Option<Value> {
    let path = format!("/ratings/{id}");
    let reply = app
        .upstream
        .get("ratings", &path, propagate(req.headers()), timeout)
        .await
        .ok()?;
    if reply.status != StatusCode::OK {
        return None;
    }
    json::parse(&reply.body).ok()?.get("ratings").cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::productpage::CALL_TIMEOUT;

    /// What the timeout tasks rely on: v3 gives up on a slow ratings before productpage gives up on
    /// reviews (the page shows v3, its ratings unavailable), and v2 waits for ratings longer than
    /// productpage waits for reviews (the page shows reviews unavailable).
    #[test]
    fn each_version_waits_for_ratings_as_the_timeout_tasks_expect() {
        assert_eq!(ratings_mode(Version::V1), None, "v1 calls no ratings");
        let (v2, black) = ratings_mode(Version::V2).expect("v2 calls ratings");
        let (v3, red) = ratings_mode(Version::V3).expect("v3 calls ratings");
        assert_eq!((black, red), ("black", "red"));
        assert!(
            v3 < CALL_TIMEOUT,
            "v3 waits {v3:?}, productpage {CALL_TIMEOUT:?}"
        );
        assert!(
            v2 > CALL_TIMEOUT,
            "v2 waits {v2:?}, productpage {CALL_TIMEOUT:?}"
        );
    }
}
