//! Who is on the other side of a request, as Istio's metrics name it, and the metadata exchange that
//! tells a sidecar: each sidecar sends its own workload metadata in `x-envoy-peer-metadata` (a
//! base64 protobuf `Struct` of node metadata, as Istio's proxies send it) and its node id in
//! `x-envoy-peer-metadata-id`; the client's sidecar on the request, the server's on the response. Each
//! side removes the other's before the application sees them.
//!
//! A peer's header is decoded once: later requests find it by its bytes in a copy-on-write table
//! (read with no lock and no allocation). The table is bounded; a peer past the bound, or one whose
//! header does not decode, is `unknown`, as is a peer that sends none (not in the mesh).

use super::Interner;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use weft_xds::node::{self, ProxyIdentity};
use weft_xds::pb::google::protobuf::{value::Kind, Struct, Value};

/// The request and response header with a sidecar's metadata.
pub static PEER_METADATA: HeaderName = HeaderName::from_static("x-envoy-peer-metadata");
/// The request and response header with a sidecar's node id.
pub static PEER_METADATA_ID: HeaderName = HeaderName::from_static("x-envoy-peer-metadata-id");

/// Istio's value for what is not known.
pub const UNKNOWN: &str = "unknown";
/// Istio's default cluster name (`global.multiCluster.clusterName`).
pub const DEFAULT_CLUSTER: &str = "Kubernetes";
/// Node metadata key of the cluster, as Istio's proxies send it.
const CLUSTER_ID: &str = "CLUSTER_ID";

/// Decoded peers kept at most; more are `unknown`.
pub const MAX_PEERS: usize = 4096;
/// Largest peer header decoded; larger ones are `unknown`.
const MAX_HEADER: usize = 16 * 1024;

/// A workload as Istio's metric labels describe it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// `*_workload`.
    pub workload: String,
    /// `*_workload_namespace`.
    pub namespace: String,
    /// `unknown`: the `*_principal` labels come from the connection's certificates
    /// (`metrics::Security`), not from the metadata exchange.
    pub principal: String,
    /// `*_app`: the `app` label.
    pub app: String,
    /// `*_version`: the `version` label.
    pub version: String,
    /// `*_canonical_service`.
    pub canonical_service: String,
    /// `*_canonical_revision`.
    pub canonical_revision: String,
    /// `*_cluster`.
    pub cluster: String,
}

impl Peer {
    /// A peer of which nothing is known.
    pub fn unknown() -> Peer {
        Peer {
            workload: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
            principal: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: UNKNOWN.into(),
            cluster: UNKNOWN.into(),
        }
    }

    /// A workload from its name, namespace, labels and cluster, with Istio's rules for the canonical
    /// service (`service.istio.io/canonical-name`, then `app.kubernetes.io/name`, then `app`, then the
    /// workload's name) and revision (`service.istio.io/canonical-revision`, then
    /// `app.kubernetes.io/version`, then `version`, then `latest`).
    pub fn new(
        workload: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        cluster: &str,
    ) -> Peer {
        let label = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k)).cloned();
        let or_unknown = |s: &str| {
            if s.is_empty() {
                UNKNOWN.to_string()
            } else {
                s.to_string()
            }
        };
        Peer {
            workload: or_unknown(workload),
            namespace: or_unknown(namespace),
            principal: UNKNOWN.into(),
            app: label(&["app"]).unwrap_or_else(|| UNKNOWN.into()),
            version: label(&["version"]).unwrap_or_else(|| UNKNOWN.into()),
            canonical_service: label(&[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ])
            .unwrap_or_else(|| or_unknown(workload)),
            canonical_revision: label(&[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ])
            .unwrap_or_else(|| "latest".into()),
            cluster: or_unknown(cluster),
        }
    }
}

/// This sidecar's own metadata, as it sends it: the two header values, made once.
#[derive(Debug, Clone)]
pub struct OwnMetadata {
    /// `x-envoy-peer-metadata`.
    pub metadata: HeaderValue,
    /// `x-envoy-peer-metadata-id`.
    pub id: HeaderValue,
    /// Both fields as HTTP/1.1 field lines, for a head encoded with them: two inserts into a request's
    /// header map (two hashes, and often the map's growth) were 730 instructions of every outbound
    /// HTTP/1.1 request (`bench/instructions`).
    pub lines: Bytes,
    /// Both fields in HPACK, for a request to an HTTP/2 upstream, likewise.
    pub fields: weft_http::upstream::EncodedFields,
}

impl OwnMetadata {
    /// The headers for `identity` in `cluster`.
    pub fn new(identity: &ProxyIdentity, cluster: &str) -> OwnMetadata {
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.to_string())),
        };
        let mut fields = std::collections::HashMap::new();
        fields.insert(node::NAME.to_string(), s(&identity.workload));
        fields.insert(node::WORKLOAD_NAME.to_string(), s(&identity.workload));
        fields.insert(node::NAMESPACE.to_string(), s(&identity.namespace));
        fields.insert(
            node::SERVICE_ACCOUNT.to_string(),
            s(&identity.service_account),
        );
        fields.insert(CLUSTER_ID.to_string(), s(cluster));
        let labels = identity
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), s(v)))
            .collect();
        fields.insert(
            node::LABELS.to_string(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(Struct { fields }.encode_to_vec());
        // Base64 and a node id of a validated identity are visible ASCII; should either not be, the
        // header is sent empty and the peer sees `unknown`.
        let metadata = HeaderValue::from_maybe_shared(Bytes::from(encoded))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        let id = HeaderValue::from_str(&identity.node_id())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        let mut lines = Vec::new();
        for (name, value) in [(&PEER_METADATA, &metadata), (&PEER_METADATA_ID, &id)] {
            lines.extend_from_slice(name.as_str().as_bytes());
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(value.as_bytes());
            lines.extend_from_slice(b"\r\n");
        }
        let fields = weft_http::upstream::encode_fields([
            (&PEER_METADATA, &metadata),
            (&PEER_METADATA_ID, &id),
        ]);
        OwnMetadata {
            metadata,
            id,
            lines: lines.into(),
            fields,
        }
    }

    /// Adds both headers.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        headers.insert(PEER_METADATA.clone(), self.metadata.clone());
        headers.insert(PEER_METADATA_ID.clone(), self.id.clone());
    }
}

/// Peers by the bytes of their metadata header.
#[derive(Debug)]
pub struct Peers {
    known: Interner<Bytes, Arc<Peer>>,
    unknown: Arc<Peer>,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            known: Interner::new(MAX_PEERS),
            unknown: Arc::new(Peer::unknown()),
        }
    }
}

impl Peers {
    /// The peer `unknown`.
    pub fn unknown(&self) -> &Arc<Peer> {
        &self.unknown
    }

    /// Removes the peer's two headers from `headers` and returns who sent them (`unknown` when none, or
    /// when they do not decode).
    pub fn take(&self, headers: &mut HeaderMap) -> Arc<Peer> {
        // One pass over the names present, and a removal only for those found: a peer outside the mesh
        // sends neither, and two removals (two hashes and probes) were 460 instructions of each of its
        // responses (`bench/instructions`).
        let (metadata, id) = present(headers);
        if id {
            headers.remove(&PEER_METADATA_ID);
        }
        if !metadata {
            return self.unknown.clone();
        }
        match headers.remove(&PEER_METADATA) {
            Some(v) => self.find(v.as_bytes()),
            None => self.unknown.clone(),
        }
    }

    /// The peer whose metadata header is `value`.
    pub fn find(&self, value: &[u8]) -> Arc<Peer> {
        if let Some(p) = self.known.get(value) {
            return p;
        }
        let peer = decode(value).map_or_else(|| self.unknown.clone(), Arc::new);
        self.known
            .insert(Bytes::copy_from_slice(value), peer.clone())
            .unwrap_or(peer)
    }
}

/// Whether `headers` have the metadata field and the id field.
pub fn present(headers: &HeaderMap) -> (bool, bool) {
    let (mut metadata, mut id) = (false, false);
    for name in headers.keys() {
        // Both names share a prefix and differ in length: the lengths tell most names apart.
        match name.as_str().len() {
            21 => metadata |= name == PEER_METADATA,
            24 => id |= name == PEER_METADATA_ID,
            _ => {}
        }
    }
    (metadata, id)
}

/// A peer from its metadata header; `None` when it is not base64 of a `Struct`.
fn decode(value: &[u8]) -> Option<Peer> {
    if value.len() > MAX_HEADER {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    let st = Struct::decode(raw.as_slice()).ok()?;
    let get = |k: &str| match st.fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => s.as_str(),
        _ => "",
    };
    let mut labels = BTreeMap::new();
    if let Some(Kind::StructValue(l)) = st.fields.get(node::LABELS).and_then(|v| v.kind.as_ref()) {
        for (k, v) in &l.fields {
            if let Some(Kind::StringValue(s)) = &v.kind {
                labels.insert(k.clone(), s.clone());
            }
        }
    }
    let workload = match get(node::WORKLOAD_NAME) {
        "" => get(node::NAME),
        w => w,
    };
    Some(Peer::new(
        workload,
        get(node::NAMESPACE),
        &labels,
        get(CLUSTER_ID),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ProxyIdentity {
        ProxyIdentity {
            workload: "reviews-v2".into(),
            namespace: "default".into(),
            labels: [("app", "reviews"), ("version", "v2")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account: "bookinfo-reviews".into(),
            ip: "127.0.1.13".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_sidecars_metadata_goes_round_the_exchange() {
        let own = OwnMetadata::new(&identity(), DEFAULT_CLUSTER);
        assert_eq!(
            own.id.to_str().unwrap(),
            "sidecar~127.0.1.13~reviews-v2.default~default.svc.cluster.local"
        );
        let mut headers = HeaderMap::new();
        own.insert_into(&mut headers);
        headers.insert("x-other", HeaderValue::from_static("kept"));
        let peers = Peers::default();
        let peer = peers.take(&mut headers);
        assert_eq!(
            *peer,
            Peer {
                workload: "reviews-v2".into(),
                namespace: "default".into(),
                principal: UNKNOWN.into(),
                app: "reviews".into(),
                version: "v2".into(),
                canonical_service: "reviews".into(),
                canonical_revision: "v2".into(),
                cluster: DEFAULT_CLUSTER.into(),
            }
        );
        // Both headers are gone before the application sees the request; others stay.
        assert_eq!(headers.len(), 1);
        // Decoded once: the same peer comes back for the same bytes.
        let again = peers.find(own.metadata.as_bytes());
        assert!(Arc::ptr_eq(&peer, &again));
    }

    #[test]
    fn the_encoded_lines_carry_both_fields() {
        let own = OwnMetadata::new(&identity(), DEFAULT_CLUSTER);
        let text = std::str::from_utf8(&own.lines).unwrap();
        let want = format!(
            "x-envoy-peer-metadata: {}\r\nx-envoy-peer-metadata-id: {}\r\n",
            own.metadata.to_str().unwrap(),
            own.id.to_str().unwrap()
        );
        assert_eq!(text, want);
    }

    #[test]
    fn either_field_alone_is_taken_off() {
        let own = OwnMetadata::new(&identity(), DEFAULT_CLUSTER);
        let peers = Peers::default();
        let mut h = HeaderMap::new();
        h.insert(PEER_METADATA_ID.clone(), own.id.clone());
        h.insert("x-envoy-peer-metadata-other", HeaderValue::from_static("1"));
        assert_eq!(present(&h), (false, true));
        assert_eq!(*peers.take(&mut h), Peer::unknown());
        assert_eq!(h.len(), 1, "{h:?}");
        let mut h = HeaderMap::new();
        h.insert(PEER_METADATA.clone(), own.metadata.clone());
        assert_eq!(present(&h), (true, false));
        assert_eq!(peers.take(&mut h).workload, "reviews-v2");
        assert!(h.is_empty());
    }

    #[test]
    fn a_peer_that_does_not_take_part_is_unknown() {
        let peers = Peers::default();
        let mut none = HeaderMap::new();
        assert_eq!(*peers.take(&mut none), Peer::unknown());
        for bad in [
            &b"not base64!"[..],
            b"AAAA",
            b"//8=",
            &[b'A'; MAX_HEADER + 4],
        ] {
            assert_eq!(*peers.find(bad), Peer::unknown(), "{bad:?}");
        }
    }

    #[test]
    fn canonical_names_follow_istios_order() {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let p = Peer::new("ratings-v1", "ns", &labels(&[]), "");
        assert_eq!(
            (p.canonical_service.as_str(), p.canonical_revision.as_str()),
            ("ratings-v1", "latest")
        );
        assert_eq!((p.app.as_str(), p.cluster.as_str()), (UNKNOWN, UNKNOWN));
        let p = Peer::new(
            "w",
            "ns",
            &labels(&[
                ("app", "a"),
                ("app.kubernetes.io/name", "k"),
                ("service.istio.io/canonical-name", "c"),
                ("version", "v1"),
                ("app.kubernetes.io/version", "kv"),
            ]),
            "c1",
        );
        assert_eq!(
            (p.canonical_service.as_str(), p.canonical_revision.as_str()),
            ("c", "kv")
        );
    }

    #[test]
    fn the_table_of_peers_is_bounded() {
        let peers = Peers::default();
        let mut own = identity();
        for i in 0..MAX_PEERS + 10 {
            own.workload = format!("w{i}");
            let m = OwnMetadata::new(&own, DEFAULT_CLUSTER);
            let p = peers.find(m.metadata.as_bytes());
            // Past the bound a peer is still decoded, just not kept.
            assert_eq!(p.workload, own.workload);
        }
        assert_eq!(peers.known.len(), MAX_PEERS);
    }
}
