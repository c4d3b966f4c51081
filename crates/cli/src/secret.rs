//! `weft proxy-config secret <proxy>`: the certificates a proxy holds, as istioctl prints them, from the
//! proxy's admin `GET /certs` (Envoy's shape): `default` is the workload's chain, `ROOTCA` the roots.

use crate::http::get_json;
use anyhow::{bail, Context};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether `what` asks for secrets (`secret`, `secrets`, `s`).
pub fn is_secret(what: &str) -> bool {
    matches!(what, "secret" | "secrets" | "s")
}

/// `weft proxy-config secret <proxy>`: `proxy` is an admin address (`127.0.0.1:15000`) or a name weftd
/// knows (workload, workload.namespace or node id).
pub async fn proxy_config_secret(weftd: &str, proxy: &str) -> anyhow::Result<()> {
    let admin = admin_address(weftd, proxy).await?;
    let certs = get_json(&admin, "/certs").await?;
    print!("{}", render(&certs, SystemTime::now())?);
    Ok(())
}

/// An admin address as given, or the one weftd's `/debug/syncz` lists for the named proxy.
async fn admin_address(weftd: &str, proxy: &str) -> anyhow::Result<String> {
    let looks_like_address = proxy
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    if looks_like_address {
        return Ok(proxy.to_string());
    }
    let syncz = get_json(weftd, "/debug/syncz").await?;
    let proxies = syncz.as_array().context("syncz is not a list")?;
    let name = |p: &Value| {
        format!(
            "{}.{}",
            p["identity"]["workload"].as_str().unwrap_or("?"),
            p["identity"]["namespace"].as_str().unwrap_or("?")
        )
    };
    let found: Vec<&Value> = proxies
        .iter()
        .filter(|p| p["node_id"] == proxy || name(p) == proxy || p["identity"]["workload"] == proxy)
        .collect();
    let p = match found.as_slice() {
        [one] => one,
        [] => bail!(
            "no connected proxy named {proxy}; connected: {}",
            proxies.iter().map(name).collect::<Vec<_>>().join(", ")
        ),
        _ => bail!("{proxy} matches several proxies; use workload.namespace or the admin address"),
    };
    p["identity"]["admin_address"]
        .as_str()
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .with_context(|| format!("{proxy} did not report an admin address"))
}

/// The table: one row for the workload certificate (`default`) and one per root (`ROOTCA`).
pub fn render(certs: &Value, now: SystemTime) -> anyhow::Result<String> {
    let entries = certs["certificates"]
        .as_array()
        .context("/certs has no certificates list")?;
    let mut rows = Vec::new();
    for e in entries {
        if let Some(leaf) = e["cert_chain"].as_array().and_then(|c| c.first()) {
            rows.push(row("default", "Cert Chain", leaf, now));
        }
        for root in e["ca_cert"].as_array().into_iter().flatten() {
            rows.push(row("ROOTCA", "CA", root, now));
        }
    }
    if rows.is_empty() {
        return Ok(
            "no certificates: the proxy has no workload identity (no --ca-token-file) or has \
                   not obtained one yet\n"
                .to_string(),
        );
    }
    let header: Vec<String> = [
        "RESOURCE NAME",
        "TYPE",
        "STATUS",
        "VALID CERT",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
        "SANS",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("     ").trim_end());
        out.push('\n');
    }
    Ok(out)
}

fn row(name: &str, kind: &str, cert: &Value, now: SystemTime) -> Vec<String> {
    let s = |k: &str| cert[k].as_str().unwrap_or("").to_string();
    let (from, until) = (s("valid_from"), s("expiration_time"));
    let valid = match (parse_rfc3339(&from), parse_rfc3339(&until)) {
        (Some(a), Some(b)) => {
            let now = now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            a <= now && now < b
        }
        _ => false,
    };
    let sans: Vec<String> = cert["subject_alt_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|san| {
            san.as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    vec![
        name.to_string(),
        kind.to_string(),
        "ACTIVE".to_string(),
        valid.to_string(),
        s("serial_number"),
        until,
        from,
        sans.join(","),
    ]
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn parse_rfc3339(t: &str) -> Option<i64> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut h = time.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn the_table_shows_the_workload_certificate_and_the_root() {
        let certs = json!({"certificates": [{
            "ca_cert": [{
                "serial_number": "4a11",
                "subject_alt_names": [],
                "valid_from": "2024-01-01T00:00:00.000Z",
                "expiration_time": "2034-01-01T00:00:00.000Z"
            }],
            "cert_chain": [{
                "serial_number": "7f3e",
                "subject_alt_names": [{"uri": "spiffe://cluster.local/ns/default/sa/reviews"}],
                "valid_from": "2024-05-01T12:00:00.000Z",
                "expiration_time": "2024-05-02T12:00:00.000Z"
            }]
        }]});
        let during = UNIX_EPOCH + Duration::from_secs(1_714_600_000); // 2024-05-01T21:46:40Z
        let table = render(&certs, during).expect("renders");
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("RESOURCE NAME"), "{table}");
        let default: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            default,
            [
                "default",
                "Cert",
                "Chain",
                "ACTIVE",
                "true",
                "7f3e",
                "2024-05-02T12:00:00.000Z",
                "2024-05-01T12:00:00.000Z",
                "spiffe://cluster.local/ns/default/sa/reviews"
            ]
        );
        assert!(lines[2].starts_with("ROOTCA"), "{table}");
        let after = UNIX_EPOCH + Duration::from_secs(1_714_700_000);
        let table = render(&certs, after).expect("renders");
        assert!(
            table.lines().nth(1).is_some_and(|l| l.contains(" false ")),
            "expired: {table}"
        );
        let none = render(&json!({"certificates": []}), during).expect("renders");
        assert!(none.starts_with("no certificates"), "{none}");
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00.000Z"), Some(951_782_400));
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00.123Z"),
            Some(1_714_564_800)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
