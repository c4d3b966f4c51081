//! The outbound side: the explicit HTTP proxy on `--ip:--outbound-port` (Istio's 15001). A request names
//! its destination in its authority; the port picks the virtual listener `0.0.0.0_<port>` and its RDS
//! table, and the shared request path ([`crate::http`]) does the rest.

use crate::http::{self, Entry};
use crate::Shared;
use std::sync::Arc;
use std::time::Duration;
use weft_http::net::Listener;
use weft_http::server;

/// Serves the outbound listener until shutdown.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: Listener,
    drain: Duration,
    limits: weft_http::Limits,
) {
    let stop = shared.shutdown.subscribe();
    let s = shared.clone();
    let handler = move |req| http::handle(s.clone(), Entry::Outbound, None, req);
    server::serve("outbound", listener, handler, stop, drain, limits).await;
}
