//! Istio's analyzer message codes, for the problems weft reports that Istio's analyzer also reports. A
//! diagnostic carries one when Istio has a message for the same mistake, so a user who knows
//! `istioctl analyze` recognises it (and can search for it).

/// IST0101 ReferencedResourceNotFound: a host, subset, gateway or selector that names nothing.
pub const REFERENCED_NOT_FOUND: &str = "IST0101";
/// IST0106 SchemaValidationError: a field with the wrong type, an unknown field, a value out of range.
pub const SCHEMA: &str = "IST0106";
/// IST0109 ConflictingMeshGatewayVirtualServiceHosts: two VirtualServices claim one host for sidecars.
pub const CONFLICTING_MESH_HOSTS: &str = "IST0109";
/// IST0110 ConflictingSidecarWorkloadSelectors: two Sidecars select the same workload.
pub const CONFLICTING_SIDECAR_SELECTORS: &str = "IST0110";
/// IST0111 MultipleSidecarsWithoutWorkloadSelectors: two Sidecars without a selector in one namespace.
pub const MULTIPLE_DEFAULT_SIDECARS: &str = "IST0111";
/// IST0112 VirtualServiceDestinationPortSelectorRequired: a destination without a port, to a service with
/// several.
pub const DESTINATION_PORT_REQUIRED: &str = "IST0112";
/// IST0128 NoServerCertificateVerificationDestinationLevel: TLS origination without `caCertificates`.
pub const NO_SERVER_VERIFICATION: &str = "IST0128";
/// IST0129 NoServerCertificateVerificationPortLevel: the same, in `portLevelSettings`.
pub const NO_SERVER_VERIFICATION_PORT: &str = "IST0129";
/// IST0130 VirtualServiceUnreachableRule: a rule after one that matches everything.
pub const UNREACHABLE_RULE: &str = "IST0130";
/// IST0131 VirtualServiceIneffectiveMatch: a match an earlier rule's match already takes.
pub const INEFFECTIVE_MATCH: &str = "IST0131";
/// IST0132 VirtualServiceHostNotFoundInGateway: a VirtualService host no server of its gateway admits.
pub const HOST_NOT_IN_GATEWAY: &str = "IST0132";
/// IST0134 ServiceEntryAddressesRequired: a TCP ServiceEntry port with no `addresses` to tell it apart.
pub const ADDRESSES_REQUIRED: &str = "IST0134";
/// IST0145 ConflictingGateways: two Gateways with the same selector and port claim one host.
pub const CONFLICTING_GATEWAYS: &str = "IST0145";
/// IST0160 MultipleTelemetriesWithoutWorkloadSelectors: two Telemetry resources without a selector in one
/// namespace.
pub const MULTIPLE_DEFAULT_TELEMETRIES: &str = "IST0160";
/// IST0174 UnknownDestinationRuleHost: a DestinationRule for a host the registry does not have.
pub const UNKNOWN_DR_HOST: &str = "IST0174";
