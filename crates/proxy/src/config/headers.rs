//! Header edits (`request_headers_to_add`/`_remove`, `response_headers_to_add`/`_remove`), parsed once at
//! snapshot build and applied to a `HeaderMap`.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use weft_xds::pb::envoy::config::core::v3::HeaderValueOption;

/// A header edit that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderEditsError {
    /// The name is not a valid header name.
    #[error("invalid header name {0:?}")]
    Name(String),
    /// The value is not a valid header value.
    #[error("invalid value for header {0:?}")]
    Value(String),
    /// The append action is unknown.
    #[error("header {name:?}: unknown append_action {action}")]
    Action {
        /// The header.
        name: String,
        /// The action number.
        action: i32,
    },
}

/// How an added header meets an existing one (Envoy's `HeaderAppendAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    /// Append a value (Istio `add`).
    Append,
    /// Add only if absent.
    AddIfAbsent,
    /// Replace or add (Istio `set`).
    Overwrite,
    /// Replace only if present.
    OverwriteIfExists,
}

/// One header to add.
#[derive(Debug, Clone)]
pub struct HeaderAdd {
    /// Name.
    pub name: HeaderName,
    /// Value.
    pub value: HeaderValue,
    /// How.
    pub action: AppendAction,
}

/// The edits for one direction.
#[derive(Debug, Clone, Default)]
pub struct Edits {
    /// Headers to add, in order.
    pub add: Vec<HeaderAdd>,
    /// Headers to remove (applied before adds, as Envoy does).
    pub remove: Vec<HeaderName>,
}

impl Edits {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies removals, then additions.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for a in &self.add {
            match a.action {
                AppendAction::Append => {
                    headers.append(a.name.clone(), a.value.clone());
                }
                AppendAction::AddIfAbsent => {
                    if !headers.contains_key(&a.name) {
                        headers.insert(a.name.clone(), a.value.clone());
                    }
                }
                AppendAction::Overwrite => {
                    headers.insert(a.name.clone(), a.value.clone());
                }
                AppendAction::OverwriteIfExists => {
                    if headers.contains_key(&a.name) {
                        headers.insert(a.name.clone(), a.value.clone());
                    }
                }
            }
        }
    }
}

/// Request and response edits of one level (route, virtual host, table, weighted cluster).
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    /// Applied to the upstream request.
    pub request: Edits,
    /// Applied to the downstream response.
    pub response: Edits,
}

impl HeaderEdits {
    /// Parses the four Envoy fields.
    pub fn new(
        req_add: &[HeaderValueOption],
        req_remove: &[String],
        resp_add: &[HeaderValueOption],
        resp_remove: &[String],
    ) -> Result<HeaderEdits, HeaderEditsError> {
        Ok(HeaderEdits {
            request: edits(req_add, req_remove)?,
            response: edits(resp_add, resp_remove)?,
        })
    }
}

fn name(s: &str) -> Result<HeaderName, HeaderEditsError> {
    HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes())
        .map_err(|_| HeaderEditsError::Name(s.to_string()))
}

#[allow(deprecated)] // `append` is deprecated but still sent by older control planes
fn edits(add: &[HeaderValueOption], remove: &[String]) -> Result<Edits, HeaderEditsError> {
    let mut out = Edits::default();
    for o in add {
        let Some(h) = &o.header else { continue };
        let n = name(&h.key)?;
        let raw: &[u8] = if h.raw_value.is_empty() {
            h.value.as_bytes()
        } else {
            &h.raw_value
        };
        let value =
            HeaderValue::from_bytes(raw).map_err(|_| HeaderEditsError::Value(h.key.clone()))?;
        // The legacy `append` BoolValue wins when set (Envoy: true → append, false → overwrite).
        let action = match &o.append {
            Some(b) if b.value => AppendAction::Append,
            Some(_) => AppendAction::Overwrite,
            None => match o.append_action {
                0 => AppendAction::Append,
                1 => AppendAction::AddIfAbsent,
                2 => AppendAction::Overwrite,
                3 => AppendAction::OverwriteIfExists,
                other => {
                    return Err(HeaderEditsError::Action {
                        name: h.key.clone(),
                        action: other,
                    })
                }
            },
        };
        out.add.push(HeaderAdd {
            name: n,
            value,
            action,
        });
    }
    for r in remove {
        out.remove.push(name(r)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::pb::envoy::config::core::v3::HeaderValue as XHeaderValue;
    use weft_xds::pb::google::protobuf::BoolValue;

    #[allow(deprecated)] // exercises the legacy `append` field
    fn opt(k: &str, v: &str, action: i32, append: Option<bool>) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(XHeaderValue {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            }),
            append: append.map(|value| BoolValue { value }),
            append_action: action,
            ..Default::default()
        }
    }

    #[test]
    fn edits_follow_append_actions() {
        let cases: &[(&str, HeaderValueOption, Option<&str>, &[&str])] = &[
            (
                "overwrite existing",
                opt("x-a", "new", 2, None),
                Some("old"),
                &["new"],
            ),
            (
                "overwrite absent",
                opt("x-a", "new", 2, None),
                None,
                &["new"],
            ),
            (
                "append existing",
                opt("x-a", "new", 0, None),
                Some("old"),
                &["old", "new"],
            ),
            (
                "add if absent, present",
                opt("x-a", "new", 1, None),
                Some("old"),
                &["old"],
            ),
            (
                "add if absent, absent",
                opt("x-a", "new", 1, None),
                None,
                &["new"],
            ),
            (
                "overwrite if exists, absent",
                opt("x-a", "new", 3, None),
                None,
                &[],
            ),
            (
                "legacy append true",
                opt("x-a", "new", 2, Some(true)),
                Some("old"),
                &["old", "new"],
            ),
            (
                "legacy append false",
                opt("x-a", "new", 0, Some(false)),
                Some("old"),
                &["new"],
            ),
        ];
        for (case, o, existing, want) in cases {
            let e = edits(std::slice::from_ref(o), &[]).expect(case);
            let mut h = HeaderMap::new();
            if let Some(v) = existing {
                h.insert("x-a", HeaderValue::from_static(v));
            }
            e.apply(&mut h);
            let got: Vec<&str> = h
                .get_all("x-a")
                .iter()
                .map(|v| v.to_str().expect("ascii"))
                .collect();
            assert_eq!(&got, want, "case {case}");
        }
    }

    #[test]
    fn remove_then_add_and_bad_names_are_errors() {
        let e = edits(&[opt("x-b", "1", 2, None)], &["x-a".into(), "X-B".into()]).expect("ok");
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("gone"));
        h.insert("x-b", HeaderValue::from_static("old"));
        e.apply(&mut h);
        assert!(h.get("x-a").is_none());
        assert_eq!(h.get("x-b").map(|v| v.as_bytes()), Some(&b"1"[..]));
        let err = edits(&[opt("bad header", "1", 2, None)], &[]).expect_err("bad name");
        assert_eq!(err.to_string(), "invalid header name \"bad header\"");
        let err = edits(&[opt("x-c", "1\n", 2, None)], &[]).expect_err("bad value");
        assert_eq!(err.to_string(), "invalid value for header \"x-c\"");
    }
}
