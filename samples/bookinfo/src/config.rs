//! Flags, their environment variables and the validated [`Config`].

use std::fmt;
use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use http::Uri;

/// Default listen address: Bookinfo's port 9080 on loopback.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9080";
/// Default version of the service to play.
pub const DEFAULT_VERSION: &str = "v1";
/// Port every Bookinfo service listens on, and so the port outbound calls name.
pub const SERVICE_PORT: u16 = 9080;

/// Which Bookinfo service this process plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Service {
    /// The web front end: calls details and reviews.
    Productpage,
    /// Book details (author, ISBN, ...).
    Details,
    /// Book reviews; v2 and v3 call ratings.
    Reviews,
    /// Star ratings.
    Ratings,
}

impl Service {
    /// The service's name as hosts and workloads spell it.
    pub fn name(self) -> &'static str {
        match self {
            Service::Productpage => "productpage",
            Service::Details => "details",
            Service::Reviews => "reviews",
            Service::Ratings => "ratings",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which version of the service this process plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Version {
    /// reviews v1: no ratings.
    V1,
    /// reviews v2: black stars from ratings (10 s timeout).
    V2,
    /// reviews v3: red stars from ratings (2.5 s timeout).
    V3,
}

impl Version {
    /// The version label, `v1`, `v2` or `v3`.
    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
            Version::V3 => "v3",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Command-line flags; every flag is also an environment variable.
#[derive(Clone, Debug, Parser)]
#[command(name = "bookinfo", about = "Bookinfo sample service for the Weft mesh")]
pub struct Args {
    /// Service to play.
    #[arg(long, env = "BOOKINFO_SERVICE", value_enum)]
    pub service: Service,

    /// Version of the service (changes reviews' behaviour only).
    #[arg(long, env = "BOOKINFO_VERSION", value_enum, default_value = DEFAULT_VERSION)]
    pub version: Version,

    /// Address to listen on (HTTP/1.1 and h2c).
    #[arg(long, env = "BOOKINFO_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Workload name reported in responses (default `<service>-<version>`).
    #[arg(long, env = "BOOKINFO_WORKLOAD")]
    pub workload: Option<String>,

    /// Explicit HTTP proxy for every outbound call, e.g. `http://127.0.0.1:15001` (the Weft sidecar).
    /// Without one, calls go straight to `http://<service>:9080`.
    #[arg(long, env = "http_proxy")]
    pub http_proxy: Option<String>,

    /// Upper-case spelling of the proxy variable; `http_proxy` wins when both are set.
    #[arg(long = "http-proxy-upper", env = "HTTP_PROXY", hide = true)]
    pub http_proxy_upper: Option<String>,
}

/// Where outbound calls are dialled when a proxy is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyAddr {
    /// Host name or IP address of the proxy.
    pub host: String,
    /// Port of the proxy.
    pub port: u16,
}

impl fmt::Display for ProxyAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Validated configuration built once from [`Args`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Service to play.
    pub service: Service,
    /// Version to play.
    pub version: Version,
    /// Listen address.
    pub listen: SocketAddr,
    /// Workload name shown in responses.
    pub workload: String,
    /// Proxy for outbound calls, if any.
    pub proxy: Option<ProxyAddr>,
}

impl TryFrom<Args> for Config {
    type Error = anyhow::Error;

    fn try_from(args: Args) -> Result<Self, Self::Error> {
        let workload = match args.workload {
            Some(w) if !w.trim().is_empty() => w,
            _ => format!("{}-{}", args.service, args.version),
        };
        let raw = [args.http_proxy, args.http_proxy_upper]
            .into_iter()
            .flatten()
            .find(|p| !p.trim().is_empty());
        let proxy = raw.as_deref().map(parse_proxy).transpose()?;
        Ok(Config {
            service: args.service,
            version: args.version,
            listen: args.listen,
            workload,
            proxy,
        })
    }
}

/// Parses a proxy URL (`http://host:port`, or curl-style `host:port`) into the address to dial.
pub fn parse_proxy(raw: &str) -> anyhow::Result<ProxyAddr> {
    let raw = raw.trim();
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid http proxy {raw:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        anyhow::bail!("invalid http proxy {raw:?}: only http:// proxies are supported");
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow::anyhow!("invalid http proxy {raw:?}: no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(ProxyAddr {
        host,
        port: uri.port_u16().unwrap_or(80),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut argv = vec!["bookinfo"];
        argv.extend_from_slice(args);
        Config::try_from(Args::try_parse_from(argv).expect("flags parse")).expect("config builds")
    }

    #[test]
    fn workload_defaults_to_service_and_version() {
        let c = parse(&[
            "--service",
            "reviews",
            "--version",
            "v3",
            "--http-proxy",
            "",
            "--http-proxy-upper",
            "",
        ]);
        assert_eq!(c.workload, "reviews-v3");
        assert_eq!(c.proxy, None);
        let c = parse(&[
            "--service",
            "details",
            "--workload",
            "details-abc",
            "--http-proxy",
            "x:1",
        ]);
        assert_eq!(c.workload, "details-abc");
        assert_eq!(c.version, Version::V1);
    }

    #[test]
    fn proxy_urls() {
        assert_eq!(
            parse_proxy("http://127.0.0.1:15001").expect("parses"),
            ProxyAddr {
                host: "127.0.0.1".into(),
                port: 15001
            }
        );
        assert_eq!(
            parse_proxy("localhost:3128/").expect("parses"),
            ProxyAddr {
                host: "localhost".into(),
                port: 3128
            }
        );
        assert_eq!(
            parse_proxy("http://[::1]:8").expect("parses").to_string(),
            "[::1]:8"
        );
        assert_eq!(parse_proxy("http://proxy").expect("parses").port, 80);
        assert!(parse_proxy("https://proxy:1").is_err());
        assert!(parse_proxy("http://").is_err());
    }
}
