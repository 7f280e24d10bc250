//! TLS for the connector and its clients (rustls with ring, through tonic).
//!
//! - The connector serves TLS with a certificate chain and private key in
//!   PEM files ([`ServerTls`], `--tls-cert` and `--tls-key`); without them
//!   it serves plaintext HTTP/2, meant for loopback and tests.
//! - A client verifies the connector's certificate, for the host name of its
//!   URL, against the system's roots or against the CA certificates it was
//!   given ([`ClientTls`]).
//! - A URL is taken at its word: `https://` is TLS or nothing (a client that
//!   cannot set TLS up refuses the URL; it never falls back to plaintext),
//!   `http://` is plaintext, anything else is refused.
//!
//! All cryptography is rustls's; this module only loads files and checks
//! that what it was given is usable, so mistakes show at start with the
//! file's name instead of as failed handshakes later.

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use zeroize::Zeroizing;

/// How long a TLS handshake may take, on either side.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client waits for a TCP connection to the connector.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The form a connector URL must have, for error messages.
const EXPECTED_URL: &str =
    "expected https://HOST:PORT, or http://HOST:PORT for plaintext on loopback and in tests";

/// What went wrong setting TLS up. Every variant names the file (or URL)
/// and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {what} file {}: {source}", path.display())]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("the {what} file {origin} is not valid PEM: {reason}")]
    BadPem {
        /// What the file should hold.
        what: &'static str,
        /// The file (or "given in memory").
        origin: String,
        /// The PEM parser's complaint.
        reason: String,
    },
    /// A file holds no `CERTIFICATE` section.
    #[error(
        "the {what} file {origin} holds no certificate (expected a PEM \
         \"-----BEGIN CERTIFICATE-----\" section)"
    )]
    NoCertificate {
        /// What the file should hold.
        what: &'static str,
        /// The file (or "given in memory").
        origin: String,
    },
    /// A file holds no private key.
    #[error(
        "the TLS key file {origin} holds no private key (expected a PEM \
         PKCS#8 \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" section)"
    )]
    NoPrivateKey {
        /// The file (or "given in memory").
        origin: String,
    },
    /// A CA certificate cannot serve as a trust anchor.
    #[error("certificate {index} in the CA file {origin} is not a usable CA certificate: {reason}")]
    BadCaCertificate {
        /// Which certificate of the file (from 1).
        index: usize,
        /// The file (or "given in memory").
        origin: String,
        /// Why.
        reason: String,
    },
    /// The key and certificate do not make a usable server identity (for
    /// example, the key is not the certificate's).
    #[error("the TLS key {key} and certificate {cert} cannot be used together: {reason}")]
    Identity {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls's complaint.
        reason: String,
    },
    /// The connector URL is malformed or has another scheme than http or
    /// https.
    #[error("connector URL {url:?}: {reason}; {EXPECTED_URL}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The URL is https, but the client cannot secure it (for example the
    /// system has no root certificates). Refused rather than sent in
    /// plaintext.
    #[error(
        "connector URL {url:?} is https, but TLS cannot be set up, so it is \
         refused (never downgraded to plaintext): {reason}"
    )]
    CannotSecure {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// A CA certificate was given for a plaintext URL: the caller meant TLS.
    #[error(
        "a CA certificate was given for the connector URL {url:?}, which is plaintext \
         http://; use an https:// URL"
    )]
    CaForPlaintext {
        /// The URL as given.
        url: String,
    },
}

const IN_MEMORY: &str = "(given in memory)";

pub(crate) fn read(what: &'static str, path: &Path) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
}

/// The certificates in a PEM text (other sections are skipped).
pub(crate) fn certificates(
    what: &'static str,
    origin: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::BadPem {
            what,
            origin: origin.to_owned(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            origin: origin.to_owned(),
        });
    }
    Ok(certificates)
}

/// The connector's TLS identity: a certificate chain and its private key,
/// checked to be usable together.
#[derive(Clone)]
pub struct ServerTls {
    config: ServerTlsConfig,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate chain (PEM, the server's certificate first) and
    /// the private key (PEM: PKCS#8, PKCS#1 or SEC1) from files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = read("TLS certificate", cert)?;
        let key_pem = read("TLS key", key)?;
        Self::build(
            &cert.display().to_string(),
            &cert_pem,
            &key.display().to_string(),
            &key_pem,
        )
    }

    /// The same from PEM text in memory.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        Self::build(IN_MEMORY, cert, IN_MEMORY, key)
    }

    fn build(
        cert_origin: &str,
        cert: &[u8],
        key_origin: &str,
        key: &[u8],
    ) -> Result<Self, TlsError> {
        certificates("TLS certificate", cert_origin, cert)?;
        match PrivateKeyDer::from_pem_slice(key) {
            Ok(_) => {}
            Err(rustls_pki_types::pem::Error::NoItemsFound) => {
                return Err(TlsError::NoPrivateKey {
                    origin: key_origin.to_owned(),
                });
            }
            Err(error) => {
                return Err(TlsError::BadPem {
                    what: "TLS key",
                    origin: key_origin.to_owned(),
                    reason: error.to_string(),
                });
            }
        }
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .timeout(HANDSHAKE_TIMEOUT);
        // Let rustls check the pair now (a key that is not the
        // certificate's, an unsupported key type), not at the first client.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|error| TlsError::Identity {
                cert: cert_origin.to_owned(),
                key: key_origin.to_owned(),
                reason: error_chain(&error),
            })?;
        Ok(Self { config })
    }

    pub(crate) fn config(&self) -> ServerTlsConfig {
        self.config.clone()
    }
}

/// What a client trusts to vouch for the connector's certificate.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// `None`: the system's roots.
    ca: Option<Vec<TrustAnchor<'static>>>,
}

impl ClientTls {
    /// Trust the system's root certificates (the default).
    pub fn system_roots() -> Self {
        Self::default()
    }

    /// Trust only the CA certificates in a PEM file (a private CA, or a
    /// self-signed connector certificate); the system's roots are not used.
    pub fn from_ca_file(path: &Path) -> Result<Self, TlsError> {
        let pem = read("CA certificate", path)?;
        Self::build(&path.display().to_string(), &pem)
    }

    /// The same from PEM text in memory.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, TlsError> {
        Self::build(IN_MEMORY, pem)
    }

    fn build(origin: &str, pem: &[u8]) -> Result<Self, TlsError> {
        let anchors = certificates("CA certificate", origin, pem)?
            .iter()
            .enumerate()
            .map(|(index, certificate)| {
                webpki::anchor_from_trusted_cert(certificate)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|error| TlsError::BadCaCertificate {
                        index: index + 1,
                        origin: origin.to_owned(),
                        reason: error.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { ca: Some(anchors) })
    }

    /// A tonic endpoint for `url`: TLS verified by `self` for `https://`,
    /// plaintext for `http://`, refused otherwise. Connects lazily.
    pub(crate) fn endpoint(&self, url: &str) -> Result<Endpoint, TlsError> {
        let bad = |reason: &str| TlsError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: tonic::codegen::http::Uri = url
            .parse()
            .map_err(|error| bad(&format!("not a URL ({error})")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(bad(&format!("unsupported scheme {other:?}"))),
            None => return Err(bad("no scheme")),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        let endpoint = Endpoint::from(uri)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if !https {
            if self.ca.is_some() {
                return Err(TlsError::CaForPlaintext {
                    url: url.to_owned(),
                });
            }
            return Ok(endpoint);
        }
        let config = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
        let config = match &self.ca {
            Some(anchors) => config.trust_anchors(anchors.iter().cloned()),
            None => config.with_native_roots(),
        };
        // tonic builds the rustls client here: it fails if the system has
        // no roots, and then the URL is refused, not sent in plaintext.
        // (With TLS compiled in, tonic itself also refuses an https URI
        // that has no TLS configuration.)
        endpoint
            .tls_config(config)
            .map_err(|error| TlsError::CannotSecure {
                url: url.to_owned(),
                reason: error_chain(&error),
            })
    }
}

/// An error and its sources, `: `-separated.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
