//! Weft's Grafana dashboards (`samples/addons/grafana/*.json`) as the tests read them: every panel's
//! PromQL, and each template variable's, with Grafana's variables filled in so that Prometheus can run
//! them ([`crate::prometheus::run_dashboard`]).

use anyhow::{bail, Context};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Grafana's own variables that may appear in a query, with what a test substitutes by default.
/// `$__rate_interval` is at least four scrape intervals in Grafana; the tests scrape every second.
pub const BUILTINS: [(&str, &str); 3] = [
    ("__rate_interval", "15s"),
    ("__interval", "5s"),
    ("__range", "5m"),
];

/// Where the dashboards are.
pub fn dashboards_dir() -> PathBuf {
    crate::workspace().join("samples/addons/grafana")
}

/// One dashboard.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// The file it was read from.
    pub file: PathBuf,
    /// Its JSON.
    pub json: Value,
}

/// Where a query comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A panel's target: the panel's title and the target's `refId`.
    Panel {
        /// Panel title.
        title: String,
        /// Target id (`A`, `B`, …).
        ref_id: String,
    },
    /// A template variable's `label_values(...)`, as the PromQL that asks for the same series.
    Variable {
        /// Variable name.
        name: String,
    },
}

/// One query of a dashboard, as written (with `$variables`).
#[derive(Debug, Clone)]
pub struct Query {
    /// Where it is.
    pub source: Source,
    /// The PromQL.
    pub expr: String,
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Panel { title, ref_id } => write!(f, "panel {title:?} {ref_id}: {}", self.expr),
            Source::Variable { name } => write!(f, "variable ${name}: {}", self.expr),
        }
    }
}

/// A template variable.
#[derive(Debug, Clone)]
pub struct Variable {
    /// Its name (`namespace`).
    pub name: String,
    /// `datasource`, `query`, …
    pub kind: String,
    /// For a query variable, its query (`label_values(metric{…}, label)`).
    pub query: Option<String>,
    /// The value meaning "all", when it offers one.
    pub all_value: Option<String>,
}

/// Every dashboard in [`dashboards_dir`], sorted by file name.
pub fn load_all() -> anyhow::Result<Vec<Dashboard>> {
    let dir = dashboards_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files.iter().map(|f| Dashboard::load(f)).collect()
}

/// The dashboard in [`dashboards_dir`] named `file` (`weft-control-plane.json`).
pub fn load(file: &str) -> anyhow::Result<Dashboard> {
    Dashboard::load(&dashboards_dir().join(file))
}

impl Dashboard {
    /// Reads and parses one dashboard file.
    pub fn load(file: &Path) -> anyhow::Result<Dashboard> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let json = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        Ok(Dashboard {
            file: file.to_path_buf(),
            json,
        })
    }

    /// Its title.
    pub fn title(&self) -> &str {
        self.json["title"].as_str().unwrap_or_default()
    }

    /// Every panel that shows data (rows left out, the panels of collapsed rows in), in order.
    pub fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for p in self.json["panels"].as_array().into_iter().flatten() {
            if p["type"] == "row" {
                out.extend(p["panels"].as_array().into_iter().flatten());
            } else {
                out.push(p);
            }
        }
        out
    }

    /// Its template variables.
    pub fn variables(&self) -> Vec<Variable> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| Variable {
                name: v["name"].as_str().unwrap_or_default().to_string(),
                kind: v["type"].as_str().unwrap_or_default().to_string(),
                // Grafana writes a query variable's query as a string, or (newer) as an object.
                query: v["query"]["query"]
                    .as_str()
                    .or_else(|| v["query"].as_str())
                    .filter(|_| v["type"] == "query")
                    .map(str::to_string),
                all_value: v["allValue"].as_str().map(str::to_string),
            })
            .collect()
    }

    /// Every query: each panel's targets, then each query variable's.
    pub fn queries(&self) -> Vec<Query> {
        let mut out = Vec::new();
        for p in self.panels() {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(Query {
                    source: Source::Panel {
                        title: title.to_string(),
                        ref_id: t["refId"].as_str().unwrap_or_default().to_string(),
                    },
                    expr: t["expr"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        for v in self.variables() {
            if let Some(q) = v.query.as_deref().and_then(label_values_promql) {
                out.push(Query {
                    source: Source::Variable { name: v.name },
                    expr: q,
                });
            }
        }
        out
    }

    /// The values a test gives the dashboard's variables: each query variable matches everything
    /// (`.*`, which is why the dashboards only use them in `=~` matchers), then [`BUILTINS`].
    pub fn default_values(&self) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = self
            .variables()
            .into_iter()
            .filter(|v| v.kind == "query")
            .map(|v| (v.name, ".*".to_string()))
            .collect();
        for (k, v) in BUILTINS {
            vars.insert(k.to_string(), v.to_string());
        }
        vars
    }
}

/// The PromQL for a Grafana `label_values(selector, label)` variable query: the series it lists the
/// label of. `None` for another kind of variable query (`label_values(label)` alone has no series).
pub fn label_values_promql(q: &str) -> Option<String> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some(format!("group by ({}) ({})", label.trim(), selector.trim()))
}

/// The names of the variables `expr` uses (`$name` or `${name}`), in order, repeats included.
pub fn variables_used(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// `expr` with every variable replaced by its value in `vars` (`${name:format}` takes the value as
/// it is); a variable `vars` lacks is an error naming it.
pub fn expand(expr: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (name, after) = if let Some(b) = rest.strip_prefix('{') {
            let end = b
                .find('}')
                .with_context(|| format!("unclosed ${{ in {expr:?}"))?;
            let name = b[..end].split(':').next().unwrap_or_default();
            (name, &b[end + 1..])
        } else {
            let n = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..n], &rest[n..])
        };
        if name.is_empty() {
            bail!("a lone $ in {expr:?}");
        }
        let Some(v) = vars.get(name) else {
            bail!("variable ${name} has no value (in {expr:?})");
        };
        out.push_str(v);
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}
