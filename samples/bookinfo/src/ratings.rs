//! The ratings service: stars per reviewer.

use http::{Method, Response, StatusCode};

use crate::config::Service;
use crate::json::Value;
use crate::server::{bad_id, health, json, method_not_allowed, not_found, product_id, Body};

/// The ratings document for product `id`.
pub fn book_ratings(id: i64) -> Value {
    Value::object([
        ("id", Value::from(id)),
        (
            "ratings",
            Value::object([("Reviewer1", Value::from(5)), ("Reviewer2", Value::from(4))]),
        ),
    ])
}

/// Routes `GET /ratings/<id>` and `GET /health`.
pub fn handle(method: &Method, path: &str) -> Response<Body> {
    if path == "/health" {
        return health(Service::Ratings);
    }
    let Some(id) = product_id(path, "/ratings/") else {
        return not_found();
    };
    if method != Method::GET {
        return method_not_allowed();
    }
    match id {
        Some(id) => json(StatusCode::OK, &book_ratings(id)),
        None => bad_id(),
    }
}
