//! The productpage service: the web front end, with sign-in and a small JSON API.

use std::fmt::Write as _;
use std::time::Duration;

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::client::Reply;
use crate::config::Service;
use crate::headers::{propagate, END_USER};
use crate::json::{self, Value};
use crate::server::{
    bad_id, health, html, json, json_raw, method_not_allowed, not_found, redirect, App, Body,
};

/// Timeout of each call to details and reviews.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Tries of the reviews call (one retry), the behaviour the fault-injection task exposes.
pub const REVIEWS_TRIES: usize = 2;
/// Shown when details cannot be had.
pub const DETAILS_UNAVAILABLE: &str =
    "Sorry, product details are currently unavailable for this book.";
/// Shown when reviews cannot be had.
pub const REVIEWS_UNAVAILABLE: &str =
    "Sorry, product reviews are currently unavailable for this book.";
/// Shown when ratings cannot be had.
pub const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";
/// Cookie holding the signed-in user.
pub const USER_COOKIE: &str = "user";

/// Largest login form accepted.
const MAX_FORM: usize = 16 * 1024;
/// Longest user name kept.
const MAX_USER: usize = 64;
/// The one product in the shop.
const PRODUCT_ID: i64 = 0;
const PRODUCT_TITLE: &str = "The Comedy of Errors";
const PRODUCT_DESCRIPTION: &str =
    "Shakespeare's shortest comedy: two sets of identical twins, separated at birth, \
     end up in the same town on the same day, and nobody can tell who is who.";

/// Routes every productpage request.
pub async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match path.as_str() {
        "/health" => health(Service::Productpage),
        "/" | "/index.html" if method == Method::GET => index(),
        "/productpage" if method == Method::GET => product_page(app, &req).await,
        "/login" if method == Method::POST => login(req).await,
        "/logout" if method == Method::GET => {
            redirect("/productpage", Some(HeaderValue::from_static(CLEAR_COOKIE)))
        }
        "/" | "/index.html" | "/productpage" | "/login" | "/logout" => method_not_allowed(),
        p if p == "/api/v1/products" || p.starts_with("/api/v1/products/") => {
            if method != Method::GET {
                return method_not_allowed();
            }
            api(app, &req, p).await
        }
        _ => not_found(),
    }
}

const CLEAR_COOKIE: &str = "user=; Path=/; Max-Age=0";

fn index() -> Response<Body> {
    let page = String::from(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Bookinfo</title></head>\n<body>\n\
         <h1>Bookinfo</h1>\n<p>A small book shop that runs as four services on the Weft mesh.</p>\n\
         <p><a href=\"/productpage\">Open the product page</a> or sign in as a test user: \
         <a href=\"/productpage?u=normal\">normal</a>, <a href=\"/productpage?u=jason\">jason</a>.</p>\n\
         <p>API: <a href=\"/api/v1/products\">/api/v1/products</a></p>\n</body>\n</html>\n"
    );
    html(StatusCode::OK, page)
}

async fn login(req: Request<Incoming>) -> Response<Body> {
    let Ok(body) = Limited::new(req.into_body(), MAX_FORM).collect().await else {
        return json(
            StatusCode::BAD_REQUEST,
            &Value::object([("error", Value::str("cannot read login form"))]),
        );
    };
    let body = body.to_bytes();
    let user = form_field(&String::from_utf8_lossy(&body), "username").and_then(clean_user);
    redirect("/productpage", user.and_then(|u| user_cookie(&u)))
}

async fn product_page<B>(app: &App, req: &Request<B>) -> Response<Body> {
    let from_query = req
        .uri()
        .query()
        .and_then(|q| form_field(q, "u"))
        .and_then(clean_user);
    let user = from_query.clone().or_else(|| cookie_user(req.headers()));
    let headers = outbound_headers(req.headers(), user.as_deref());

    let (details, reviews) = tokio::join!(
        get_details(app, PRODUCT_ID, headers.clone()),
        get_reviews(app, PRODUCT_ID, headers)
    );
    let mut resp = html(StatusCode::OK, render(user.as_deref(), details, reviews));
    if let Some(cookie) = from_query.as_deref().and_then(user_cookie) {
        resp.headers_mut().append(SET_COOKIE, cookie);
    }
    resp
}

async fn api<B>(app: &App, req: &Request<B>, path: &str) -> Response<Body> {
    let user = cookie_user(req.headers());
    let headers = outbound_headers(req.headers(), user.as_deref());
    let rest = path
        .trim_start_matches("/api/v1/products")
        .trim_start_matches('/');
    if rest.is_empty() {
        let products = Value::Array(vec![Value::object([
            ("id", Value::from(PRODUCT_ID)),
            ("title", Value::str(PRODUCT_TITLE)),
            ("descriptionHtml", Value::str(PRODUCT_DESCRIPTION)),
        ])]);
        return json(StatusCode::OK, &products);
    }
    let mut parts = rest.splitn(2, '/');
    let id = parts.next().unwrap_or_default();
    let what = parts.next();
    let Ok(id) = id.parse::<i64>() else {
        return if matches!(what, None | Some("reviews" | "ratings")) {
            bad_id()
        } else {
            not_found()
        };
    };
    let (result, unavailable) = match what {
        None => (get_details(app, id, headers).await, DETAILS_UNAVAILABLE),
        Some("reviews") => (get_reviews(app, id, headers).await, REVIEWS_UNAVAILABLE),
        Some("ratings") => {
            let r = app
                .upstream
                .get("ratings", &format!("/ratings/{id}"), headers, CALL_TIMEOUT)
                .await
                .ok();
            (r, RATINGS_UNAVAILABLE)
        }
        Some(_) => return not_found(),
    };
    // A downstream failure keeps its status (503 when there was no answer at all) with a readable message.
    match result {
        Some(reply) if reply.status == StatusCode::OK => json_raw(reply.status, reply.body),
        failed => json(
            failed.map_or(StatusCode::SERVICE_UNAVAILABLE, |r| r.status),
            &Value::object([("error", Value::str(unavailable))]),
        ),
    }
}

/// Headers for calls to details and reviews: the propagated set, with `end-user` set to the signed-in user.
fn outbound_headers(incoming: &HeaderMap, user: Option<&str>) -> HeaderMap {
    let mut headers = propagate(incoming);
    if let Some(value) = user.and_then(|u| HeaderValue::from_str(u).ok()) {
        headers.insert(END_USER, value);
    }
    headers
}

/// Details reply, `None` when the call failed (any transport error or timeout).
async fn get_details(app: &App, id: i64, headers: HeaderMap) -> Option<Reply> {
    app.upstream
        .get("details", &format!("/details/{id}"), headers, CALL_TIMEOUT)
        .await
        .ok()
}

/// Reviews reply: the first `200`, else the last answer, or `None` when no try got an answer.
async fn get_reviews(app: &App, id: i64, headers: HeaderMap) -> Option<Reply> {
    let path = format!("/reviews/{id}");
    let mut last = None;
    for _ in 0..REVIEWS_TRIES {
        match app
            .upstream
            .get("reviews", &path, headers.clone(), CALL_TIMEOUT)
            .await
        {
            Ok(reply) if reply.status == StatusCode::OK => return Some(reply),
            Ok(reply) => last = Some(reply),
            Err(_) => {}
        }
    }
    last
}

/// The JSON body of a successful reply.
fn ok_json(reply: Option<Reply>) -> Option<Value> {
    reply
        .filter(|r| r.status == StatusCode::OK)
        .and_then(|r| json::parse(&r.body).ok())
}

fn render(user: Option<&str>, details: Option<Reply>, reviews: Option<Reply>) -> String {
    let mut page = String::with_capacity(4096);
    page.push_str(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Bookinfo: product page</title></head>\n\
         <body>\n<nav><a href=\"/productpage\">Bookinfo</a>\n",
    );
    match user {
        Some(u) => {
            let _ = writeln!(
                page,
                "<p>signed in as {} <a href=\"/logout\">sign out</a></p>",
                escape(u)
            );
        }
        None => page.push_str(
            "<form method=\"post\" action=\"/login\">\n<input type=\"text\" name=\"username\" \
             placeholder=\"user name\"> <input type=\"password\" name=\"passwd\" placeholder=\"any password\"> \
             <button type=\"submit\">Sign in</button>\n</form>\n",
        ),
    }
    page.push_str("</nav>\n");
    let _ = writeln!(
        page,
        "<h1>{}</h1>\n<p>{}</p>",
        escape(PRODUCT_TITLE),
        escape(PRODUCT_DESCRIPTION)
    );

    page.push_str("<h2>Book Details</h2>\n");
    match ok_json(details) {
        Some(d) => {
            page.push_str("<dl>\n");
            for (label, key) in [
                ("Author", "author"),
                ("Year", "year"),
                ("Type", "type"),
                ("Pages", "pages"),
                ("Publisher", "publisher"),
                ("Language", "language"),
                ("ISBN-10", "ISBN-10"),
                ("ISBN-13", "ISBN-13"),
            ] {
                let value = d.get(key).map(plain).unwrap_or_default();
                let _ = writeln!(page, "<dt>{label}:</dt><dd>{}</dd>", escape(&value));
            }
            page.push_str("</dl>\n");
        }
        None => {
            let _ = writeln!(page, "<p>{DETAILS_UNAVAILABLE}</p>");
        }
    }

    page.push_str("<h2>Book Reviews</h2>\n");
    match ok_json(reviews) {
        Some(r) => {
            for review in r
                .get("reviews")
                .and_then(Value::as_array)
                .unwrap_or_default()
            {
                render_review(&mut page, review);
            }
            let podname = r
                .get("podname")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            let _ = writeln!(page, "<p>Reviews served by: {}</p>", escape(podname));
        }
        None => {
            let _ = writeln!(page, "<p>{REVIEWS_UNAVAILABLE}</p>");
        }
    }
    page.push_str("</body>\n</html>\n");
    page
}

fn render_review(page: &mut String, review: &Value) {
    let text = review
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let reviewer = review
        .get("reviewer")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let _ = writeln!(
        page,
        "<blockquote>\n<p>{}</p>\n<small>{}</small>",
        escape(text),
        escape(reviewer)
    );
    if let Some(rating) = review.get("rating") {
        if let Some(stars) = rating.get("stars").and_then(Value::as_f64) {
            let stars = stars.clamp(0.0, 5.0) as usize;
            let color = match rating.get("color").and_then(Value::as_str) {
                Some("red") => "red",
                _ => "black",
            };
            let _ = writeln!(
                page,
                "<p><font color=\"{color}\">{}{}</font></p>",
                "\u{2605}".repeat(stars),
                "\u{2606}".repeat(5 - stars)
            );
        } else {
            let _ = writeln!(page, "<p><i>{RATINGS_UNAVAILABLE}</i></p>");
        }
    }
    page.push_str("</blockquote>\n");
}

/// A JSON scalar as page text.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A user name as accepted: trimmed, without control characters, at most [`MAX_USER`] characters, not empty.
fn clean_user(raw: String) -> Option<String> {
    let user: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER)
        .collect();
    (!user.is_empty()).then_some(user)
}

/// The `Set-Cookie` value that signs `user` in.
fn user_cookie(user: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{USER_COOKIE}={}; Path=/", percent_encode(user))).ok()
}

/// The signed-in user from the `user` cookie.
fn cookie_user(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == USER_COOKIE)
        .map(|(_, value)| percent_decode(value.trim_matches('"')))
        .and_then(clean_user)
}

/// The first value of `name` in a URL-encoded form or query string.
fn form_field(form: &str, name: &str) -> Option<String> {
    form.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
        .next()
}

/// Decodes `%XX` escapes and `+` as space; invalid escapes stay as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes everything but unreserved characters as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::details;
    use bytes::Bytes;

    #[test]
    fn forms_and_cookies() {
        assert_eq!(
            form_field("username=jason&passwd=x", "username").as_deref(),
            Some("jason")
        );
        assert_eq!(
            form_field("a=1&u=J%C3%A9r%20me+x", "u").as_deref(),
            Some("Jér me x")
        );
        assert_eq!(form_field("u", "u").as_deref(), Some(""));
        assert_eq!(form_field("x=1", "u"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");

        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("session=1; user=a%20b; other=2"),
        );
        assert_eq!(cookie_user(&h).as_deref(), Some("a b"));
        h.insert(COOKIE, HeaderValue::from_static("user="));
        assert_eq!(cookie_user(&h), None);
        assert_eq!(
            user_cookie("jason")
                .expect("valid")
                .to_str()
                .expect("ascii"),
            "user=jason; Path=/"
        );
        assert_eq!(
            clean_user(format!("  {}  ", "x".repeat(100))).map(|u| u.len()),
            Some(MAX_USER)
        );
    }

    #[test]
    fn renders_fallbacks_and_escapes() {
        let page = render(Some("<b>"), None, None);
        assert!(page.contains(DETAILS_UNAVAILABLE) && page.contains(REVIEWS_UNAVAILABLE));
        assert!(page.contains("signed in as &lt;b&gt;"));
        let reviews = Reply {
            status: StatusCode::OK,
            body: Bytes::from_static(
                br#"{"podname":"reviews-v3","reviews":[{"reviewer":"R","text":"t","rating":{"stars":4,"color":"red"}},{"reviewer":"S","text":"u","rating":{"error":"x"}}]}"#,
            ),
        };
        let details = Reply {
            status: StatusCode::OK,
            body: Bytes::from(details::book_details(0).to_string()),
        };
        let page = render(None, Some(details), Some(reviews));
        assert!(
            page.contains("<font color=\"red\">\u{2605}\u{2605}\u{2605}\u{2605}\u{2606}</font>")
        );
        assert!(page.contains(RATINGS_UNAVAILABLE));
        assert!(page.contains("Reviews served by: reviews-v3"));
        assert!(page.contains("<dd>William Shakespeare</dd>") && page.contains("<dd>1595</dd>"));
        assert!(page.contains("action=\"/login\""));
    }
}
