//! The secrets weftd serves over SDS on the ADS stream: only `ROOTCA`, the mesh's trust anchors, as
//! istiod's agent hands them to Envoy. The workload's own key and certificate (`default`) never pass
//! through weftd: each proxy makes its key and asks the CA for its certificate, as Istio's agent does,
//! and serves `default` to itself.
//!
//! What the ADS server does with these (subscriptions, pushes when the root changes) is in
//! [`crate::server`]; where the root comes from is the CA's concern: whoever has it sends it into the
//! channel [`roots`] returns.

use std::sync::Arc;
use tokio::sync::watch;
use weft_xds::pb::envoy::config::core::v3::{data_source, DataSource};
use weft_xds::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, SdsSecretConfig, Secret,
};
use weft_xds::{pack, type_url, Any};

/// The SDS name of the workload's own certificate and key (Istio's); weftd names it in every TLS
/// context and never serves it.
pub const DEFAULT: &str = "default";
/// The SDS name of the mesh's trust anchors (Istio's).
pub const ROOTCA: &str = "ROOTCA";

/// The mesh's root certificates in PEM (one or more), as weftd serves them under [`ROOTCA`]; `None`
/// until a root is known. A new value is pushed to every proxy watching `ROOTCA`.
pub type Roots = watch::Receiver<Option<Arc<str>>>;

/// A channel for the roots: the CA keeps the sender (and sends a new bundle when the root changes),
/// the ADS server reads the receiver.
pub fn roots(initial: Option<String>) -> (watch::Sender<Option<Arc<str>>>, Roots) {
    watch::channel(initial.map(Arc::from))
}

/// Where a TLS context finds secret `name`: on the ADS stream it came from (Istio names the agent's
/// SDS socket there instead; weft's proxy takes both from one stream).
pub fn sds_config(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(crate::translate::ads()),
    }
}

/// The `ROOTCA` secret for a PEM bundle: a validation context trusting exactly those certificates.
pub fn root_ca(pem: &str) -> Secret {
    Secret {
        name: ROOTCA.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineBytes(pem.as_bytes().to_vec())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
    }
}

/// [`root_ca`] packed as an xDS resource.
pub fn root_ca_resource(pem: &str) -> Any {
    pack(type_url::SECRET, &root_ca(pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    #[allow(deprecated)] // match_subject_alt_names
    fn rootca_is_a_validation_context_with_the_pem_inline() {
        let any = root_ca_resource(PEM);
        assert_eq!(any.type_url, type_url::SECRET);
        let s: Secret = weft_xds::unpack(&any).expect("decodes");
        assert_eq!(s.name, "ROOTCA");
        let Some(secret::Type::ValidationContext(v)) = s.r#type else {
            panic!("not a validation context: {:?}", s.r#type);
        };
        assert_eq!(
            v.trusted_ca.and_then(|d| d.specifier),
            Some(data_source::Specifier::InlineBytes(PEM.as_bytes().to_vec()))
        );
        assert!(v.match_subject_alt_names.is_empty());
    }

    #[test]
    fn secrets_are_named_on_the_ads_stream() {
        let c = sds_config(DEFAULT);
        assert_eq!(c.name, "default");
        let src = c.sds_config.expect("a config source");
        assert!(matches!(
            src.config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        assert_eq!(src.resource_api_version, 2, "V3");
    }
}
