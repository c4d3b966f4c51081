//! `weft proxy-status` (from weftd's `/debug/syncz`) and `weft proxy-config` (from the proxy's own admin
//! `/config_dump`, in Envoy's config-dump shape).

use crate::http::get_json;
use anyhow::{bail, Context};
use serde_json::Value;

const TYPES: [&str; 4] = ["CDS", "LDS", "EDS", "RDS"];

fn proxy_name(p: &Value) -> String {
    let id = &p["identity"];
    format!(
        "{}.{}",
        id["workload"].as_str().unwrap_or("?"),
        id["namespace"].as_str().unwrap_or("?")
    )
}

fn cell(t: &Value) -> String {
    let status = t["status"].as_str().unwrap_or("?");
    if status == "NOT SENT" {
        return status.to_string();
    }
    let mut s = format!(
        "{status} {}/{}",
        t["sent_version"].as_str().unwrap_or(""),
        t["acked_version"].as_str().unwrap_or("")
    );
    if !t["nack"].is_null() {
        s.push_str(" NACK");
    }
    s
}

/// Renders the proxy-status table (or one proxy's detail).
pub fn render_status(syncz: &Value, only: Option<&str>) -> anyhow::Result<String> {
    let proxies = syncz.as_array().context("syncz is not a list")?;
    let mut out = String::new();
    if let Some(name) = only {
        let p = find(proxies, name)?;
        out.push_str(&format!(
            "{}  ({})\n",
            proxy_name(p),
            p["node_id"].as_str().unwrap_or("")
        ));
        for t in TYPES {
            let ts = &p["types"][t];
            out.push_str(&format!(
                "  {t}: {}  sent version {} nonce {}  acked version {} nonce {}  resources {}\n",
                ts["status"].as_str().unwrap_or("?"),
                ts["sent_version"].as_str().unwrap_or(""),
                ts["sent_nonce"].as_str().unwrap_or(""),
                ts["acked_version"].as_str().unwrap_or(""),
                ts["acked_nonce"].as_str().unwrap_or(""),
                ts["resources"],
            ));
            if let Some(n) = ts["nack"].as_str() {
                out.push_str(&format!("       last NACK: {n}\n"));
            }
        }
        return Ok(out);
    }
    let rows: Vec<Vec<String>> = proxies
        .iter()
        .map(|p| {
            let mut row = vec![proxy_name(p)];
            row.extend(TYPES.iter().map(|t| cell(&p["types"][*t])));
            row.push(
                p["identity"]["admin_address"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
            row
        })
        .collect();
    let header: Vec<String> = ["NAME", "CDS", "LDS", "EDS", "RDS", "ADMIN"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out.push_str("(versions: sent/acknowledged)\n");
    Ok(out)
}

fn find<'a>(proxies: &'a [Value], name: &str) -> anyhow::Result<&'a Value> {
    let matches: Vec<&Value> = proxies
        .iter()
        .filter(|p| {
            p["node_id"] == name || proxy_name(p) == name || p["identity"]["workload"] == name
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "no connected proxy named {name}; connected: {}",
            proxies
                .iter()
                .map(proxy_name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => bail!("{name} matches several proxies; use workload.namespace or the node id"),
    }
}

/// `weft proxy-status [proxy]`.
pub async fn proxy_status(weftd: &str, only: Option<&str>) -> anyhow::Result<()> {
    let syncz = get_json(weftd, "/debug/syncz").await?;
    print!("{}", render_status(&syncz, only)?);
    Ok(())
}

/// The `@type` of a config-dump section.
fn section_type(what: &str) -> anyhow::Result<&'static str> {
    Ok(match what {
        "clusters" | "cluster" | "c" => "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
        "listeners" | "listener" | "l" => "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
        "routes" | "route" | "r" => "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        "endpoints" | "endpoint" | "ep" => "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
        "all" => "",
        other => bail!(
            "unknown config type {other:?}: use clusters, listeners, routes, endpoints or all"
        ),
    })
}

/// `weft proxy-config <type> <proxy>`: what the proxy holds, from its admin port.
pub async fn proxy_config(weftd: &str, what: &str, name: &str) -> anyhow::Result<()> {
    let want = section_type(what)?;
    let syncz = get_json(weftd, "/debug/syncz").await?;
    let proxies = syncz.as_array().context("syncz is not a list")?;
    let p = find(proxies, name)?;
    let admin = p["identity"]["admin_address"]
        .as_str()
        .filter(|a| !a.is_empty())
        .with_context(|| format!("{name} did not report an admin address"))?;
    let dump = get_json(admin, "/config_dump").await?;
    let out = if want.is_empty() {
        dump
    } else {
        dump["configs"]
            .as_array()
            .and_then(|c| c.iter().find(|s| s["@type"] == want).cloned())
            .with_context(|| format!("{admin}/config_dump has no {want}"))?
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_shows_each_type_with_versions() {
        let syncz = serde_json::json!([{
            "node_id": "sidecar~127.0.1.12~reviews-v1.default~default.svc.cluster.local",
            "identity": {"workload": "reviews-v1", "namespace": "default", "admin_address": "127.0.1.12:15000"},
            "types": {
                "CDS": {"status": "SYNCED", "sent_version": "3", "acked_version": "3", "nack": null},
                "LDS": {"status": "STALE", "sent_version": "3", "acked_version": "2", "nack": "bad regex"},
                "EDS": {"status": "SYNCED", "sent_version": "3", "acked_version": "3", "nack": null},
                "RDS": {"status": "NOT SENT", "nack": null}
            }
        }]);
        let table = render_status(&syncz, None).expect("renders");
        let line = table.lines().nth(1).expect("row");
        assert!(line.starts_with("reviews-v1.default"), "{line}");
        assert!(line.contains("SYNCED 3/3"), "{line}");
        assert!(line.contains("STALE 3/2 NACK"), "{line}");
        assert!(line.contains("NOT SENT"), "{line}");
        let detail = render_status(&syncz, Some("reviews-v1")).expect("detail");
        assert!(detail.contains("last NACK: bad regex"), "{detail}");
        assert!(render_status(&syncz, Some("nope")).is_err());
    }
}
