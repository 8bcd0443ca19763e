//! Certificates: who a caller is (SPEC.md §8.2).
//!
//! **Convention.** Every client certificate names one party and one role:
//! - the party is the subject's Common Name (exactly one CN; 1–64 characters of
//!   `A-Z a-z 0-9 . _ -`, not starting with `.`), e.g. `holder-a`;
//! - the role is exactly one subject-alternative-name URI `urn:renketsu:role:<role>` with
//!   `<role>` one of `admin`, `data-holder`, `linkage-unit`, `auditor`, `researcher`
//!   ([`Role::uri`]).
//!
//! The custodian trusts one CA (`client_ca_root`); rustls verifies the chain, validity period
//! and the clientAuth key usage before any RPC runs, and [`identity_from_der`] then reads
//! (party, role) from the verified end-entity certificate. A certificate with no role URI,
//! two role URIs, an unknown role or a malformed party name is refused: ambiguity is never
//! resolved in the caller's favour.
//!
//! [`DevCa`] issues a development CA, the custodian's server certificate and role
//! certificates with `rcgen` (ECDSA P-256), for `renketsu pki dev-init`. Production
//! deployments use their own CA and only need to follow the convention above.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use renketsu_protocol::v1;
use x509_parser::extensions::GeneralName;
use zeroize::Zeroizing;

/// Prefix of the SAN URI that carries a certificate's role.
pub const ROLE_URI_PREFIX: &str = "urn:renketsu:role:";

/// Common Name of the development CA made by [`DevCa::generate`].
pub const DEV_CA_NAME: &str = "renketsu development CA";

/// The role a caller acts in, from its client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The custodian's operator: creates projects, enrols holders, rotates and revokes keys.
    Admin,
    /// A data holder: evaluates blinded elements, receives wrapped CLK keys.
    DataHolder,
    /// The linkage unit: receives re-keying deltas, never evaluations or CLK keys.
    LinkageUnit,
    /// An auditor: reads the audit log.
    Auditor,
    /// A researcher: fetches releases from the linkage unit; never calls the custodian.
    Researcher,
}

impl Role {
    /// Every role, in a fixed order (for tests and help texts).
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::DataHolder,
        Role::LinkageUnit,
        Role::Auditor,
        Role::Researcher,
    ];

    /// The role's name in certificates and messages: `admin`, `data-holder`, `linkage-unit`,
    /// `auditor` or `researcher`.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::DataHolder => "data-holder",
            Role::LinkageUnit => "linkage-unit",
            Role::Auditor => "auditor",
            Role::Researcher => "researcher",
        }
    }

    /// The SAN URI that names this role, e.g. `urn:renketsu:role:data-holder`.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.name())
    }

    /// The role named `name` ([`Role::name`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The wire enum value.
    pub const fn to_proto(self) -> v1::Role {
        match self {
            Role::Admin => v1::Role::Admin,
            Role::DataHolder => v1::Role::DataHolder,
            Role::LinkageUnit => v1::Role::LinkageUnit,
            Role::Auditor => v1::Role::Auditor,
            Role::Researcher => v1::Role::Researcher,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who is calling: the party and role read from a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// Party name (the certificate's Common Name), e.g. `holder-a`.
    pub party: String,
    /// The role of the certificate's `urn:renketsu:role:` URI.
    pub role: Role,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.party, self.role)
    }
}

/// Errors reading or issuing certificates. Messages name files and parties, never key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The certificate is not parseable DER X.509.
    #[error("client certificate is not valid X.509: {0}")]
    Parse(String),
    /// The subject has no Common Name, or more than one.
    #[error("client certificate subject must have exactly one Common Name (the party name)")]
    CommonName,
    /// The Common Name is not a valid party name.
    #[error(
        "invalid party name {0:?}: use 1-64 characters of A-Z a-z 0-9 . _ - (not starting with .)"
    )]
    PartyName(String),
    /// No `urn:renketsu:role:` URI among the subject alternative names.
    #[error("client certificate has no role: add the SAN URI {ROLE_URI_PREFIX}<role>")]
    NoRole,
    /// More than one role URI.
    #[error("client certificate names {0} roles; exactly one is allowed")]
    SeveralRoles(usize),
    /// A role URI with an unknown role name.
    #[error(
        "client certificate names unknown role {0:?} (known: admin, data-holder, linkage-unit, auditor)"
    )]
    UnknownRole(String),
    /// Generating a key or signing a certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing an output file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `dev-init` would overwrite existing files.
    #[error("{0} already exists; refusing to overwrite a CA (use an empty directory)")]
    Exists(PathBuf),
}

/// Whether `name` is a valid party name: 1–64 characters of `A-Z a-z 0-9 . _ -`, not
/// starting with `.` (safe as a file name and in audit entries).
/// The rule is [`renketsu_keys::names::is_valid_name`], the same as for project names.
pub fn is_valid_party(name: &str) -> bool {
    renketsu_keys::names::is_valid_name(name)
}

/// Reads (party, role) from the first certificate of a PEM file (a client's own certificate,
/// e.g. to learn its party name before a call). Errors as [`identity_from_der`].
pub fn identity_from_pem(pem: &[u8]) -> Result<PeerIdentity, PkiError> {
    let (_, p) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| PkiError::Parse(e.to_string()))?;
    identity_from_der(&p.contents)
}

/// Reads (party, role) from a DER client certificate whose chain the TLS layer has already
/// verified. Errors: [`PkiError::Parse`], [`PkiError::CommonName`], [`PkiError::PartyName`],
/// [`PkiError::NoRole`], [`PkiError::SeveralRoles`], [`PkiError::UnknownRole`].
pub fn identity_from_der(der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    let mut cns = cert.subject().iter_common_name();
    let cn = cns.next().ok_or(PkiError::CommonName)?;
    if cns.next().is_some() {
        return Err(PkiError::CommonName);
    }
    let party = cn.as_str().map_err(|_| PkiError::CommonName)?;
    if !is_valid_party(party) {
        return Err(PkiError::PartyName(party.to_owned()));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    let roles: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(ROLE_URI_PREFIX),
            _ => None,
        })
        .collect();
    let role = match roles.as_slice() {
        [] => return Err(PkiError::NoRole),
        [one] => Role::from_name(one).ok_or_else(|| PkiError::UnknownRole((*one).to_owned()))?,
        many => return Err(PkiError::SeveralRoles(many.len())),
    };
    Ok(PeerIdentity {
        party: party.to_owned(),
        role,
    })
}

/// A certificate and its private key, both PEM. The key is zeroized on drop and never
/// printed by `Debug`.
pub struct IssuedCert {
    /// The certificate (PEM, `CERTIFICATE`).
    pub cert_pem: String,
    /// The PKCS#8 private key (PEM, `PRIVATE KEY`).
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A development certificate authority (ECDSA P-256), kept in memory.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: Zeroizing<String>,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DevCa(<key redacted>)")
    }
}

/// Validity of development certificates: from the start of the current year to the end of
/// the year three years on.
fn validity(params: &mut CertificateParams) {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    // Days since 1970-01-01 to a civil year (H. Hinnant's days_from_civil, inverted).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let year = i32::try_from(year).unwrap_or(2026);
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 3, 12, 31);
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "renketsu");
    dn.push(DnType::CommonName, cn);
    dn
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String, PkiError> {
    Ok(rcgen::string::Ia5String::try_from(s)?)
}

impl DevCa {
    /// A new CA with a fresh P-256 key, Common Name [`DEV_CA_NAME`].
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        let issuer = CertifiedIssuer::self_signed(Self::ca_params(), key)?;
        Ok(Self { issuer, key_pem })
    }

    fn ca_params() -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(DEV_CA_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params);
        params
    }

    /// The CA certificate (PEM): what servers and clients trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's private key (PEM). Keep it offline once the certificates are issued.
    pub fn key_pem(&self) -> &Zeroizing<String> {
        &self.key_pem
    }

    fn issue(&self, params: CertificateParams) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate()?;
        let issuer: &Issuer<'_, KeyPair> = &self.issuer;
        let cert = params.signed_by(&key, issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// A client certificate for `party` acting as `role`, following the module's convention
    /// (CN = party, SAN URI `urn:renketsu:role:<role>`, EKU clientAuth).
    pub fn issue_client(&self, party: &str, role: Role) -> Result<IssuedCert, PkiError> {
        if !is_valid_party(party) {
            return Err(PkiError::PartyName(party.to_owned()));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name(party);
        params.subject_alt_names = vec![SanType::URI(ia5(&role.uri())?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        self.issue(params)
    }

    /// The custodian's server certificate for the given DNS names and IP addresses
    /// (EKU serverAuth, CN `renketsu custodian`).
    pub fn issue_server(&self, dns: &[&str], ips: &[IpAddr]) -> Result<IssuedCert, PkiError> {
        self.issue_server_named("renketsu custodian", dns, ips)
    }

    /// A server certificate with Common Name `cn` for the given DNS names and IP addresses
    /// (EKU serverAuth): each server of a deployment gets its own name.
    pub fn issue_server_named(
        &self,
        cn: &str,
        dns: &[&str],
        ips: &[IpAddr],
    ) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cn);
        let mut sans = Vec::with_capacity(dns.len() + ips.len());
        for d in dns {
            sans.push(SanType::DnsName(ia5(d)?));
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        self.issue(params)
    }
}

/// One file written by [`dev_init`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenCert {
    /// Party name (`custodian` for the server certificate).
    pub party: String,
    /// Role, or `None` for the server certificate.
    pub role: Option<Role>,
    /// Certificate file.
    pub cert: PathBuf,
    /// Private key file (mode 0600).
    pub key: PathBuf,
}

/// Writes `contents` to a new file `path` (refusing to overwrite); mode 0600 when `secret`.
fn write_new(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            PkiError::Exists(path.to_owned())
        } else {
            io(e)
        }
    })?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The parties `dev-init` always makes besides the holders: (party, role).
pub const DEV_FIXED_PARTIES: [(&str, Role); 4] = [
    ("admin", Role::Admin),
    ("auditor", Role::Auditor),
    ("linkage-unit", Role::LinkageUnit),
    ("researcher", Role::Researcher),
];

/// Makes a development PKI in `out` (created if missing; must not already hold `ca.pem`):
/// `ca.pem`, `ca.key`, the server certificates `custodian.{pem,key}` and
/// `linkage-unit-server.{pem,key}` (SAN `localhost`, `127.0.0.1`, `::1`), and
/// `<party>.{pem,key}` for `admin`, `auditor`, `linkage-unit`, `researcher` and each of `holders`
/// (role data-holder). Keys are mode 0600. Returns the files written, CA first excluded.
pub fn dev_init(out: &Path, holders: &[String]) -> Result<Vec<WrittenCert>, PkiError> {
    for h in holders {
        if !is_valid_party(h) {
            return Err(PkiError::PartyName(h.clone()));
        }
        if DEV_FIXED_PARTIES.iter().any(|(p, _)| p == h)
            || ["custodian", "linkage-unit-server", "ca"].contains(&h.as_str())
        {
            return Err(PkiError::PartyName(format!(
                "{h} (reserved for a dev-init certificate)"
            )));
        }
    }
    fs::create_dir_all(out).map_err(|source| PkiError::Io {
        path: out.to_owned(),
        source,
    })?;
    let ca_path = out.join("ca.pem");
    if ca_path.exists() {
        return Err(PkiError::Exists(ca_path));
    }
    let ca = DevCa::generate()?;
    write_new(&ca_path, ca.cert_pem().as_bytes(), false)?;
    write_new(&out.join("ca.key"), ca.key_pem().as_bytes(), true)?;

    let mut written = Vec::new();
    let mut save = |party: &str, role: Option<Role>, issued: IssuedCert| {
        let cert = out.join(format!("{party}.pem"));
        let key = out.join(format!("{party}.key"));
        write_new(&cert, issued.cert_pem.as_bytes(), false)?;
        write_new(&key, issued.key_pem.as_bytes(), true)?;
        written.push(WrittenCert {
            party: party.to_owned(),
            role,
            cert,
            key,
        });
        Ok::<(), PkiError>(())
    };
    let loopback: [IpAddr; 2] = [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ];
    // Distinct Common Names: a log or a TLS error says which server it was.
    for (server, cn) in [
        ("custodian", "renketsu custodian"),
        ("linkage-unit-server", "renketsu linkage unit"),
    ] {
        save(
            server,
            None,
            ca.issue_server_named(cn, &["localhost"], &loopback)?,
        )?;
    }
    for (party, role) in DEV_FIXED_PARTIES {
        save(party, Some(role), ca.issue_client(party, role)?)?;
    }
    for h in holders {
        save(
            h,
            Some(Role::DataHolder),
            ca.issue_client(h, Role::DataHolder)?,
        )?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der_of(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }

    #[test]
    fn issued_client_certificates_carry_party_and_role() {
        let ca = DevCa::generate().unwrap();
        for role in Role::ALL {
            let issued = ca.issue_client("holder-a", role).unwrap();
            let id = identity_from_der(&der_of(&issued.cert_pem)).unwrap();
            assert_eq!(
                id,
                PeerIdentity {
                    party: "holder-a".into(),
                    role
                }
            );
        }
    }

    #[test]
    fn server_certificate_has_no_role() {
        let ca = DevCa::generate().unwrap();
        let issued = ca
            .issue_server(&["localhost"], &[IpAddr::from([127, 0, 0, 1])])
            .unwrap();
        assert!(matches!(
            identity_from_der(&der_of(&issued.cert_pem)),
            Err(PkiError::PartyName(_) | PkiError::NoRole)
        ));
    }

    #[test]
    fn certificates_with_two_or_unknown_roles_are_refused() {
        let ca = DevCa::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = name("mallory");
        params.subject_alt_names = vec![
            SanType::URI(ia5(&Role::DataHolder.uri()).unwrap()),
            SanType::URI(ia5(&Role::Admin.uri()).unwrap()),
        ];
        let two = ca.issue(params.clone()).unwrap();
        assert!(matches!(
            identity_from_der(&der_of(&two.cert_pem)),
            Err(PkiError::SeveralRoles(2))
        ));
        params.subject_alt_names = vec![SanType::URI(ia5("urn:renketsu:role:root").unwrap())];
        let unknown = ca.issue(params).unwrap();
        assert!(matches!(
            identity_from_der(&der_of(&unknown.cert_pem)),
            Err(PkiError::UnknownRole(r)) if r == "root"
        ));
    }

    #[test]
    fn party_names_are_checked() {
        assert!(is_valid_party("holder-a"));
        assert!(is_valid_party("NDB_2026.v1"));
        for bad in ["", ".hidden", "a/b", "名前", &"x".repeat(65)] {
            assert!(!is_valid_party(bad), "{bad:?}");
        }
        let ca = DevCa::generate().unwrap();
        assert!(matches!(
            ca.issue_client("../etc", Role::Admin),
            Err(PkiError::PartyName(_))
        ));
    }

    #[test]
    fn dev_init_writes_keys_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pki");
        let written = dev_init(&out, &["holder-a".into(), "holder-b".into()]).unwrap();
        let parties: Vec<&str> = written.iter().map(|w| w.party.as_str()).collect();
        assert_eq!(
            parties,
            [
                "custodian",
                "linkage-unit-server",
                "admin",
                "auditor",
                "linkage-unit",
                "researcher",
                "holder-a",
                "holder-b"
            ]
        );
        // The two server certificates have no role; every client certificate names its own.
        assert!(written[..2].iter().all(|w| w.role.is_none()));
        for w in &written[2..] {
            let pem = fs::read_to_string(&w.cert).unwrap();
            let id = identity_from_der(&der_of(&pem)).unwrap();
            assert_eq!(id.party, w.party);
            assert_eq!(Some(id.role), w.role);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for key in written
                .iter()
                .map(|w| w.key.clone())
                .chain([out.join("ca.key")])
            {
                let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", key.display());
            }
        }
        assert!(matches!(dev_init(&out, &[]), Err(PkiError::Exists(_))));
        for reserved in ["admin", "researcher", "linkage-unit-server"] {
            assert!(matches!(
                dev_init(&dir.path().join("other"), &[reserved.into()]),
                Err(PkiError::PartyName(_))
            ));
        }
    }

    #[test]
    fn dev_init_gives_each_server_its_own_common_name() {
        let dir = tempfile::tempdir().unwrap();
        let written = dev_init(&dir.path().join("pki"), &[]).unwrap();
        let cn = |party: &str| {
            let w = written.iter().find(|w| w.party == party).unwrap();
            let pem = fs::read_to_string(&w.cert).unwrap();
            let der = der_of(&pem);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let cn = cert.subject().iter_common_name().next().unwrap();
            cn.as_str().unwrap().to_owned()
        };
        let (a, b) = (cn("custodian"), cn("linkage-unit-server"));
        assert_ne!(a, b, "both server certificates are named {a:?}");
    }

    #[test]
    fn identity_from_pem_reads_the_party_of_a_client_certificate() {
        let ca = DevCa::generate().unwrap();
        let issued = ca.issue_client("ehr", Role::DataHolder).unwrap();
        let id = identity_from_pem(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(id.party, "ehr");
        assert!(identity_from_pem(b"not a certificate").is_err());
    }
}
