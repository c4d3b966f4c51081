//! weftd's trace collector, through `run`: a span posted to its Zipkin port is read back from Zipkin's
//! query API; the flags, their defaults and a port that cannot be bound.

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weft_control::{run, Args, Config};

/// A loopback address of this test process's own (the harness gives each mesh one the same way), so
/// the collector can listen on Zipkin's port without contending with anything else.
fn own_ip() -> String {
    let pid = std::process::id();
    format!("127.{}.{}.94", 100 + (pid >> 8) % 100, pid % 256)
}

fn config_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weftd-traces-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("config dir");
    dir
}

/// weftd's flags: a config directory, `extra`, and `--console-address off` when this weftd has a
/// console (it listens on a fixed port by default, which two tests at once cannot share).
fn args(extra: &[&str]) -> Args {
    use clap::CommandFactory;
    let dir = config_dir("flags");
    let mut argv = vec![
        "weftd".to_string(),
        "--config-dir".into(),
        dir.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let console = Args::command()
        .get_arguments()
        .any(|a| a.get_long() == Some("console-address"));
    if console {
        argv.extend(["--console-address".to_string(), "off".to_string()]);
    }
    Args::try_parse_from(argv).expect("flags parse")
}

async fn call(method: &str, url: &str, body: &'static str) -> Result<(u16, String), String> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

const SPAN: &str = r#"[{"traceId":"80f198ee56343ba864fe8b2a57d3eff7","id":"e457b5a2e4d86bd1","kind":"SERVER",
  "name":"reviews.default.svc.cluster.local:9080/*","timestamp":1700000000000000,"duration":2500,
  "localEndpoint":{"serviceName":"reviews.default","ipv4":"127.0.1.2","port":9080},
  "tags":{"http.status_code":"200","component":"proxy"}}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_posted_to_weftd_is_read_back_from_the_query_api() {
    let zipkin = format!("{}:9411", own_ip());
    let args = args(&[
        "--xds-address",
        "127.0.0.1:0",
        "--debug-address",
        "127.0.0.1:0",
        "--zipkin-address",
        &zipkin,
        "--otlp-http-address",
        "off",
    ]);
    let config = Config::try_from(&args).expect("config");
    let weftd = tokio::spawn(run(config));

    // weftd binds before it serves; poll until the collector answers.
    let url = format!("http://{zipkin}/api/v2/spans");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_millis(5);
    let posted = loop {
        match call("POST", &url, SPAN).await {
            Ok(answer) => break answer,
            Err(e) => {
                assert!(!weftd.is_finished(), "weftd stopped: {:?}", weftd.await);
                assert!(tokio::time::Instant::now() < deadline, "no collector: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(200));
            }
        }
    };
    assert_eq!(posted, (202, String::new()));

    let base = format!("http://{zipkin}/api/v2");
    let (status, body) = call(
        "GET",
        &format!("{base}/trace/80f198ee56343ba864fe8b2a57d3eff7"),
        "",
    )
    .await
    .expect("trace");
    assert_eq!(status, 200, "{body}");
    let spans: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(spans[0]["id"], "e457b5a2e4d86bd1");
    assert_eq!(spans[0]["localEndpoint"]["serviceName"], "reviews.default");
    assert_eq!(spans[0]["tags"]["http.status_code"], "200");
    let (_, services) = call("GET", &format!("{base}/services"), "")
        .await
        .expect("services");
    assert_eq!(services, r#"["reviews.default"]"#);
    let (_, found) = call(
        "GET",
        &format!("{base}/traces?serviceName=reviews.default&endTs=1700000001000&lookback=60000"),
        "",
    )
    .await
    .expect("traces");
    let found: serde_json::Value = serde_json::from_str(&found).expect("JSON");
    assert_eq!(found[0][0]["traceId"], "80f198ee56343ba864fe8b2a57d3eff7");
    weftd.abort();
}

#[tokio::test]
async fn a_trace_port_that_cannot_be_bound_is_an_error_naming_the_flag_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let args = args(&[
        "--xds-address",
        "127.0.0.1:0",
        "--debug-address",
        "127.0.0.1:0",
        "--zipkin-address",
        "off",
        "--otlp-http-address",
        &addr,
    ]);
    let config = Config::try_from(&args).expect("config");
    let e = tokio::time::timeout(Duration::from_secs(10), run(config))
        .await
        .expect("run returns")
        .expect_err("the port is taken");
    assert_eq!(
        e.to_string(),
        format!("cannot bind trace collector (--otlp-http-address) on {addr}")
    );
}

#[test]
fn trace_flags_and_their_defaults() {
    // Defaults: the debug address's IP, Zipkin's and OTLP/HTTP's ports; the store's bounds.
    let c = Config::try_from(&args(&["--debug-address", "127.0.9.1:15014"])).expect("config");
    let at = |s: &str| Some(s.parse::<SocketAddr>().expect("addr"));
    assert_eq!(c.zipkin_address, at("127.0.9.1:9411"));
    assert_eq!(c.otlp_http_address, at("127.0.9.1:4318"));
    assert_eq!(
        (c.trace_bounds.max_traces, c.trace_bounds.max_spans),
        (10_000, 50_000)
    );
    let c = Config::try_from(&args(&[
        "--zipkin-address",
        "off",
        "--otlp-http-address",
        "[::1]:14318",
        "--trace-max-traces",
        "5",
        "--trace-max-spans",
        "50",
    ]))
    .expect("config");
    assert_eq!(c.zipkin_address, None);
    assert_eq!(c.otlp_http_address, at("[::1]:14318"));
    assert_eq!(
        (c.trace_bounds.max_traces, c.trace_bounds.max_spans),
        (5, 50)
    );

    let dir = config_dir("flags");
    for (flag, value, want) in [
        (
            "--zipkin-address",
            "zipkin:9411",
            "\"zipkin:9411\" is not an address (ip:port) or off",
        ),
        ("--trace-max-spans", "0", "0 is not in 1.."),
    ] {
        let e = Args::try_parse_from([
            "weftd",
            "--config-dir",
            &dir.display().to_string(),
            flag,
            value,
        ])
        .expect_err(flag)
        .to_string();
        assert!(e.contains(want), "{flag} {value}: {e}");
    }
}
