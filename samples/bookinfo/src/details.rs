//! The details service: facts about the book.

use http::{Method, Response, StatusCode};

use crate::config::Service;
use crate::json::Value;
use crate::server::{bad_id, health, json, method_not_allowed, not_found, product_id, Body};

/// The details document for product `id`.
pub fn book_details(id: i64) -> Value {
    Value::object([
        ("id", Value::from(id)),
        ("author", Value::str("William Shakespeare")),
        ("year", Value::from(1595)),
        ("type", Value::str("paperback")),
        ("pages", Value::from(200)),
        ("publisher", Value::str("PublisherA")),
        ("language", Value::str("English")),
        ("ISBN-10", Value::str("1234567890")),
        ("ISBN-13", Value::str("123-1234567890")),
    ])
}

/// Routes `GET /details/<id>` and `GET /health`.
pub fn handle(method: &Method, path: &str) -> Response<Body> {
    if path == "/health" {
        return health(Service::Details);
    }
    let Some(id) = product_id(path, "/details/") else {
        return not_found();
    };
    if method != Method::GET {
        return method_not_allowed();
    }
    match id {
        Some(id) => json(StatusCode::OK, &book_details(id)),
        None => bad_id(),
    }
}
