//! Writes the seed corpus of the `xds_snapshot` target (`corpus/xds_snapshot/seed-*`): the resources the
//! proxy's integration tests build (`crates/proxy/tests/support/resources.rs`, included as it is), plus
//! routes with the features the proxy converts (regexes, header matches, retries, faults, header edits),
//! arranged as the responses weftd sends.
//!
//! `cd fuzz && cargo +nightly run --example xds_seeds` (rewrites the seeds; review the diff).

use std::net::SocketAddr;
use weft_fuzz::xds_input::{encode, Response};
use weft_xds::pb::envoy::config::core::v3::TrafficDirection;
use weft_xds::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, route_match::PathSpecifier, HeaderMatcher, RetryPolicy,
    Route,
};
use weft_xds::pb::envoy::extensions::filters::common::fault::v3::{fault_delay, FaultDelay};
use weft_xds::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort, FaultAbort, HttpFault,
};
use weft_xds::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatcher, StringMatcher,
};
use weft_xds::pb::envoy::r#type::v3::FractionalPercent;
use weft_xds::pb::google::protobuf::UInt32Value;
use weft_xds::{pack, Any};

#[allow(dead_code)] // the tests' builders, not all of which a seed uses
#[path = "../../crates/proxy/tests/support/resources.rs"]
mod resources;
use resources::*;

const CDS: usize = 0;
const EDS: usize = 1;
const LDS: usize = 2;
const RDS: usize = 3;

fn a(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

fn sotw(type_index: usize, resources: &[&Any]) -> (usize, bool, u8, Vec<Vec<u8>>) {
    let bytes = resources.iter().map(|r| r.value.clone()).collect();
    (type_index, false, 0, bytes)
}

fn delta(type_index: usize, removed: u8, resources: &[&Any]) -> (usize, bool, u8, Vec<Vec<u8>>) {
    (type_index, true, removed, sotw(type_index, resources).3)
}

/// A route using every match and action feature the proxy converts.
fn rich_routes() -> Vec<Route> {
    let mut regex = route_to("", "reviews");
    regex.r#match.as_mut().expect("a match").path_specifier =
        Some(PathSpecifier::SafeRegex(RegexMatcher {
            regex: "/api/v[0-9]+/.*".into(),
            ..Default::default()
        }));
    let m = regex.r#match.as_mut().expect("a match");
    m.headers = vec![
        HeaderMatcher {
            name: "end-user".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Exact("jason".into())),
                ignore_case: true,
            })),
            ..Default::default()
        },
        HeaderMatcher {
            name: "x-canary".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
            invert_match: true,
            ..Default::default()
        },
        HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                    regex: "GET|HEAD".into(),
                    ..Default::default()
                })),
                ignore_case: false,
            })),
            ..Default::default()
        },
    ];
    action(&mut regex).retry_policy = Some(RetryPolicy {
        retry_on: "5xx,connect-failure,retriable-status-codes".into(),
        num_retries: Some(UInt32Value { value: 3 }),
        per_try_timeout: Some(dur_ms(250)),
        retriable_status_codes: vec![503],
        ..Default::default()
    });
    action(&mut regex).timeout = Some(dur_ms(1500));
    regex.request_headers_to_add = vec![header("x-weft", "1", 0), header("x-trace", "a", 1)];
    regex.request_headers_to_remove = vec!["x-internal".into()];
    regex.response_headers_to_add = vec![header("x-served-by", "weft", 2)];

    let mut fault = route_to("/ratings", "ratings");
    let http_fault = HttpFault {
        delay: Some(FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(dur_ms(7000))),
            percentage: Some(FractionalPercent {
                numerator: 100,
                denominator: 0,
            }),
        }),
        abort: Some(FaultAbort {
            error_type: Some(fault_abort::ErrorType::HttpStatus(500)),
            percentage: Some(FractionalPercent {
                numerator: 10,
                denominator: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    fault.typed_per_filter_config.insert(
        weft_xds::filter_name::FAULT.into(),
        pack(weft_xds::type_url::HTTP_FAULT, &http_fault),
    );

    let mut exact = route_to("", "details");
    exact.r#match.as_mut().expect("a match").path_specifier =
        Some(PathSpecifier::Path("/details".into()));
    vec![
        regex,
        fault,
        exact,
        weighted("/", &[("reviews-v1", 80), ("reviews-v2", 20)]),
    ]
}

fn main() -> std::io::Result<()> {
    let eds_a = eds_cluster("reviews");
    let eds_b = eds_cluster("ratings");
    let stat = static_cluster("details", &[a("127.0.0.1:9080"), a("[::1]:9080")]);
    let dns = logical_dns_cluster("external");
    let (_, cla_a) = cla("reviews", &[a("127.0.0.1:9081"), a("127.0.0.2:9081")]);
    let (_, cla_b) = cla("ratings", &[a("127.0.0.1:9082")]);
    let (_, cla_empty) = cla("ratings", &[]);
    let out_l = outbound_listener(9080);
    let in_l = inbound_listener("inbound|9080", a("127.0.0.1:15006"), "inbound|9080||");
    let tcp_l = tcp_listener(
        "0.0.0.0_9000",
        a("127.0.0.1:9000"),
        TrafficDirection::Outbound,
        "outbound|9000||db",
    );
    let (_, rc_simple) = route_config(
        "9080",
        vec![vhost(
            "reviews:9080",
            &["reviews", "reviews:9080", "*.reviews.svc"],
            vec![route_to("/", "reviews")],
        )],
    );
    let (_, rc_rich) = route_config(
        "9080",
        vec![
            vhost("bookinfo", &["bookinfo.*", "*"], rich_routes()),
            vhost("details", &["details"], vec![route_to("/", "details")]),
        ],
    );

    let seeds = [
        (
            "sotw-bring-up",
            vec![
                sotw(CDS, &[&eds_a, &eds_b, &stat]),
                sotw(EDS, &[&cla_a, &cla_b]),
                sotw(LDS, &[&out_l, &in_l, &tcp_l]),
                sotw(RDS, &[&rc_simple]),
            ],
        ),
        (
            "sotw-routes-then-clusters-go",
            vec![
                sotw(LDS, &[&out_l]),
                sotw(RDS, &[&rc_rich]),
                sotw(CDS, &[&eds_a, &stat]),
                sotw(EDS, &[&cla_a, &cla_b]),
                sotw(CDS, &[&stat]),
                sotw(LDS, &[]),
            ],
        ),
        (
            "sotw-nack-keeps-last-good",
            vec![
                sotw(CDS, &[&eds_a]),
                sotw(CDS, &[&eds_a, &dns]),
                sotw(EDS, &[&cla_a]),
            ],
        ),
        (
            "delta-add-change-remove",
            vec![
                delta(CDS, 0, &[&eds_a, &eds_b]),
                delta(EDS, 0, &[&cla_a, &cla_b]),
                delta(EDS, 0, &[&cla_empty]),
                delta(LDS, 0, &[&out_l, &tcp_l]),
                delta(RDS, 0, &[&rc_rich]),
                delta(CDS, 0b01, &[]),
                delta(LDS, 0b11, &[&in_l]),
            ],
        ),
        ("one-cluster-static", vec![sotw(CDS, &[&stat])]),
        ("one-load-assignment", vec![sotw(EDS, &[&cla_a])]),
        ("one-listener-inline-routes", vec![sotw(LDS, &[&in_l])]),
        ("one-route-table", vec![sotw(RDS, &[&rc_rich])]),
    ];
    let dir = "corpus/xds_snapshot";
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR"))?;
    std::fs::create_dir_all(dir)?;
    for (name, responses) in &seeds {
        let responses: Vec<Response> = responses
            .iter()
            .map(|(type_index, delta, removed, bytes)| Response {
                type_index: *type_index,
                delta: *delta,
                removed: *removed,
                resources: bytes.iter().map(Vec::as_slice).collect(),
            })
            .collect();
        let path = format!("{dir}/seed-{name}");
        std::fs::write(&path, encode(&responses))?;
        println!("fuzz/{path}");
    }
    Ok(())
}
