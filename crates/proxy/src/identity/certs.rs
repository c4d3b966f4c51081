//! The admin port's `GET /certs`: the certificates the proxy holds, in the shape of Envoy's `/certs`
//! (`envoy.admin.v3.Certificates`): one entry whose `cert_chain` is the workload's chain, leaf first,
//! and whose `ca_cert` is the mesh's roots. `weft proxy-config secret` reads it.

use super::Identity;
use rustls_pki_types::CertificateDer;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// `{"certificates": [...]}`; empty when the proxy has no identity (yet).
pub fn dump(identity: Option<&Identity>) -> Value {
    let now = SystemTime::now();
    let Some(id) = identity else {
        return json!({ "certificates": [] });
    };
    let list = |certs: &[CertificateDer<'_>]| -> Vec<Value> {
        certs.iter().map(|c| details(c, now)).collect()
    };
    json!({ "certificates": [{
        "ca_cert": list(&id.roots),
        "cert_chain": list(&id.chain),
    }]})
}

/// Envoy's `CertificateDetails` of one certificate; a certificate that does not parse says so.
fn details(der: &CertificateDer<'_>, now: SystemTime) -> Value {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let cert = match X509Certificate::from_der(der.as_ref()) {
        Ok((_, c)) => c,
        Err(e) => return json!({ "path": "<inline>", "error": e.to_string() }),
    };
    let sans: Vec<Value> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(json!({ "uri": u })),
                GeneralName::DNSName(d) => Some(json!({ "dns": d })),
                GeneralName::IPAddress(b) => ip(b).map(|a| json!({ "ip_address": a })),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let time = |t: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64)
    };
    let from = time(cert.validity().not_before);
    let until = time(cert.validity().not_after);
    let days = until
        .duration_since(now)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    json!({
        "path": "<inline>",
        "serial_number": cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
        "subject_alt_names": sans,
        "days_until_expiration": days.to_string(),
        "valid_from": crate::admin::rfc3339(from),
        "expiration_time": crate::admin::rfc3339(until),
    })
}

fn ip(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b)
            .ok()
            .map(|a| std::net::Ipv4Addr::from(a).to_string()),
        16 => <[u8; 16]>::try_from(b)
            .ok()
            .map(|a| std::net::Ipv6Addr::from(a).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::PrivateKeyDer;

    /// A root and a leaf for `spiffe://cluster.local/ns/default/sa/reviews` it signed, as the CA would
    /// answer (leaf, root).
    pub(crate) fn issued() -> (Vec<String>, PrivateKeyDer<'static>) {
        let root_key = rcgen::KeyPair::generate().expect("key");
        let mut rp = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        rp.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = rp.self_signed(&root_key).expect("root");
        let issuer = rcgen::Issuer::new(rp, &root_key);
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let mut lp = rcgen::CertificateParams::default();
        lp.distinguished_name = rcgen::DistinguishedName::new();
        lp.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://cluster.local/ns/default/sa/reviews"
                .try_into()
                .expect("ia5"),
        )];
        let leaf = lp.signed_by(&leaf_key, &issuer).expect("leaf");
        (
            vec![leaf.pem(), root.pem()],
            PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
    }

    #[test]
    fn the_dump_has_envoys_shape_with_the_chain_and_the_roots() {
        let (chain, key) = issued();
        let id = Identity::from_chain(&chain, key).expect("identity");
        assert_eq!(
            &*id.spiffe_id,
            "spiffe://cluster.local/ns/default/sa/reviews"
        );
        assert_eq!((id.chain.len(), id.roots.len()), (1, 1));
        let v = dump(Some(&id));
        let entry = &v["certificates"][0];
        let leaf = &entry["cert_chain"][0];
        assert_eq!(
            leaf["subject_alt_names"],
            json!([{ "uri": "spiffe://cluster.local/ns/default/sa/reviews" }])
        );
        assert_eq!(leaf["serial_number"], json!(id.serial));
        assert_eq!(
            leaf["valid_from"],
            json!(crate::admin::rfc3339(id.not_before))
        );
        assert_eq!(entry["ca_cert"].as_array().map(Vec::len), Some(1));
        assert_eq!(dump(None), json!({ "certificates": [] }));
    }

    #[test]
    fn a_chain_without_one_spiffe_id_is_refused() {
        let (mut chain, key) = issued();
        chain[0] = chain[1].clone(); // the root as leaf: no URI SAN
        let err = Identity::from_chain(&chain, key.clone_key()).expect_err("no SAN");
        assert!(err.to_string().contains("not one spiffe:// ID"), "{err}");
        let err = Identity::from_chain(&["junk".into()], key).expect_err("junk");
        assert_eq!(
            err.to_string(),
            "the CA's answer is not a usable certificate chain: element 0 is not a PEM certificate"
        );
    }
}
