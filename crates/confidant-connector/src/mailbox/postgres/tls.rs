//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` ask for it.
//!
//! tokio-postgres knows `disable`, `prefer` and `require` but neither the
//! verifying modes nor `sslrootcert`, and refuses a URL naming them; so the
//! two are taken out of the URL here, and what they ask for becomes
//! tokio-postgres's mode and a rustls client configuration:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` (the default) | when the server offers it, else plaintext | as for `require` |
//! | `require` | always: a server without TLS is refused | not checked, unless `sslrootcert` is given: then its chain, as `verify-ca` |
//! | `verify-ca` | always | chains to `sslrootcert` |
//! | `verify-full` | always | chains to `sslrootcert` and is valid for the host name |
//!
//! `sslrootcert=system` trusts the system's root certificates (read by
//! `rustls-native-certs`, which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`)
//! and, as in libpq, implies `verify-full`: a weaker `sslmode` with it is
//! refused.
//!
//! All cryptography is rustls's (with ring): the handshake signatures are
//! always checked by rustls, and the chain and name by its webpki verifier.

use super::super::MailboxError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// Plaintext only.
    Disable,
    /// libpq tries plaintext first; here taken as `prefer` (TLS when
    /// offered), which is never less protected.
    Allow,
    /// TLS when the server offers it.
    Prefer,
    /// TLS or nothing.
    Require,
    /// TLS, the certificate chaining to `sslrootcert`.
    VerifyCa,
    /// TLS, the certificate chaining to `sslrootcert` and valid for the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, MailboxError> {
        Ok(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(unusable(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                )));
            }
        })
    }

    /// The mode as a URL names it.
    fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// tokio-postgres's mode for this one.
    fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Allow | Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// What `sslrootcert` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootCerts {
    /// A PEM file of the CA certificates to trust.
    File(PathBuf),
    /// `system`: the system's root certificates.
    System,
}

/// What the database URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatabaseTls {
    pub(crate) mode: SslMode,
    /// `sslrootcert`: the CA certificates to trust.
    pub(crate) root_cert: Option<RootCerts>,
}

fn unusable(reason: String) -> MailboxError {
    MailboxError::Schema(format!("the database URL is not usable: {reason}"))
}

/// The connection settings of `url` (a `postgres://` URL or a libpq
/// `key=value` string) for tokio-postgres, and its TLS settings, checked:
/// a verifying mode needs `sslrootcert`.
pub(crate) fn config(url: &str) -> Result<(tokio_postgres::Config, DatabaseTls), MailboxError> {
    let (rest, mode, root_cert) =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            split_url(url)?
        } else {
            split_key_values(url)?
        };
    let root_cert = match root_cert {
        Some(path) if path == "system" => Some(RootCerts::System),
        Some(path) if path.is_empty() => None,
        other => other.map(|path| RootCerts::File(PathBuf::from(path))),
    };
    // As libpq: the system's roots imply verify-full, and refuse less.
    let default_mode = if root_cert == Some(RootCerts::System) {
        SslMode::VerifyFull
    } else {
        SslMode::Prefer
    };
    let mode = mode.map_or(Ok(default_mode), |mode| SslMode::parse(&mode))?;
    if root_cert == Some(RootCerts::System) && mode != SslMode::VerifyFull {
        return Err(unusable(format!(
            "sslrootcert=system needs sslmode=verify-full (or no sslmode), not {}: the \
             system's roots vouch for many names, so only the name check makes them safe",
            mode.name()
        )));
    }
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
        let name = mode.name();
        return Err(unusable(format!(
            "sslmode={name} needs sslrootcert=PATH, a PEM file of the CA certificates to trust"
        )));
    }
    let mut config = rest
        .parse::<tokio_postgres::Config>()
        .map_err(|error| unusable(crate::tls::error_chain(&error)))?;
    config.ssl_mode(mode.driver_mode());
    Ok((config, DatabaseTls { mode, root_cert }))
}

type Split = (String, Option<String>, Option<String>);

/// A `postgres://` URL without its `sslmode` and `sslrootcert` query
/// parameters, and their (percent-decoded) values.
fn split_url(url: &str) -> Result<Split, MailboxError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for parameter in query.split('&') {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        match key {
            "sslmode" => mode = Some(percent_decode(value)?),
            "sslrootcert" => root_cert = Some(percent_decode(value)?),
            _ => kept.push(parameter),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, root_cert))
}

fn percent_decode(value: &str) -> Result<String, MailboxError> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                .ok_or_else(|| unusable(format!("bad percent-encoding in {value:?}")))?;
            decoded.push(hex);
            index += 3;
        } else {
            decoded.push(byte);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| unusable(format!("{value:?} is not UTF-8")))
}

/// A libpq `key=value` string without its `sslmode` and `sslrootcert`
/// pairs, and their values. Values are read as libpq reads them (bare up
/// to a space, or single-quoted with `\` escapes) and written back quoted.
fn split_key_values(text: &str) -> Result<Split, MailboxError> {
    let (mut mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(unusable(format!("expected `=` after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(unusable("unterminated quoted value".into())),
                    },
                    Some(c) => value.push(c),
                    None => return Err(unusable("unterminated quoted value".into())),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        match key.as_str() {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root_cert = Some(value),
            _ => {
                let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
                kept.push(format!("{key}='{quoted}'"));
            }
        }
    }
    Ok((kept.join(" "), mode, root_cert))
}

/// The rustls connector `tls` asks for (used by tokio-postgres only when
/// its mode lets it: never for `disable`).
pub(crate) fn connector(
    tls: &DatabaseTls,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, MailboxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| MailboxError::Storage(format!("cannot set TLS up: {error}")))?;
    let roots = match &tls.root_cert {
        Some(RootCerts::File(path)) if tls.mode != SslMode::Disable => Some(Arc::new(roots(path)?)),
        Some(RootCerts::System) if tls.mode != SslMode::Disable => Some(Arc::new(system_roots()?)),
        _ => None,
    };
    if roots.is_none() && matches!(tls.mode, SslMode::VerifyCa | SslMode::VerifyFull) {
        // Refused when the URL is read; kept here so that no verifying
        // mode can ever fall through to the unchecked verifier.
        return Err(unusable("a verifying sslmode needs sslrootcert".into()));
    }
    let config = match roots {
        Some(roots) if tls.mode == SslMode::VerifyFull => {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        roots => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PostgresVerifier { roots, provider }))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn roots(path: &std::path::Path) -> Result<RootCertStore, MailboxError> {
    let what = "PostgreSQL root certificate (sslrootcert)";
    let refused = |error: crate::tls::TlsError| MailboxError::Schema(error.to_string());
    let pem = crate::tls::read(what, path).map_err(refused)?;
    let certificates =
        crate::tls::certificates(what, &path.display().to_string(), &pem).map_err(refused)?;
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates.into_iter().enumerate() {
        roots.add(certificate).map_err(|error| {
            MailboxError::Schema(format!(
                "certificate {} in the {what} file {} is not usable: {error}",
                index + 1,
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

/// The system's root certificates, as `rustls-native-certs` finds them
/// (`SSL_CERT_FILE`, `SSL_CERT_DIR`, or the platform's store). Refused when
/// none is usable.
fn system_roots() -> Result<RootCertStore, MailboxError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(MailboxError::Schema(format!(
            "sslrootcert=system: no usable root certificate found on this system (set \
             SSL_CERT_FILE, or give sslrootcert=PATH){}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        )));
    }
    Ok(roots)
}

/// The certificate check of every mode but `verify-full` and `disable`:
/// - without roots, `prefer` and `require` without `sslrootcert`, as
///   libpq: the connection is encrypted and the handshake's signatures
///   checked, but the certificate is not (anyone on the path can present
///   one of its own);
/// - with roots, `verify-ca` (and `prefer` or `require` given
///   `sslrootcert`, as libpq): the certificate must chain to the roots; its
///   names are not checked.
#[derive(Debug)]
struct PostgresVerifier {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PostgresVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode as Driver;

    fn parsed(url: &str) -> (tokio_postgres::Config, DatabaseTls) {
        config(url).unwrap_or_else(|error| panic!("{url}: {error}"))
    }

    fn refusal(url: &str) -> String {
        match config(url) {
            Ok(parsed) => panic!("{url} was accepted: {parsed:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn each_sslmode_maps_to_the_drivers_mode() {
        for (value, mode, driver) in [
            ("disable", SslMode::Disable, Driver::Disable),
            ("allow", SslMode::Allow, Driver::Prefer),
            ("prefer", SslMode::Prefer, Driver::Prefer),
            ("require", SslMode::Require, Driver::Require),
            ("verify-ca", SslMode::VerifyCa, Driver::Require),
            ("verify-full", SslMode::VerifyFull, Driver::Require),
        ] {
            let url =
                format!("postgres://u@db.example:5433/mail?sslmode={value}&sslrootcert=/ca.pem");
            let (config, tls) = parsed(&url);
            assert_eq!(tls.mode, mode, "{url}");
            assert_eq!(config.get_ssl_mode(), driver, "{url}");
            assert_eq!(
                tls.root_cert,
                Some(RootCerts::File(PathBuf::from("/ca.pem")))
            );
            assert_eq!(config.get_dbname(), Some("mail"));
            assert_eq!(config.get_ports(), [5433]);
        }
        // Without sslmode: prefer, as libpq.
        let (config, tls) = parsed("postgres://u@localhost/mail");
        assert_eq!(
            (tls.mode, config.get_ssl_mode()),
            (SslMode::Prefer, Driver::Prefer)
        );
        assert_eq!(tls.root_cert, None);
    }

    #[test]
    fn the_other_url_parameters_are_kept() {
        let (config, tls) = parsed(
            "postgres://u@localhost:5432/mail?host=/var/run/postgresql&sslmode=require\
             &options=-csearch_path%3Dmine&sslrootcert=%2Fetc%2Fca%20x.pem",
        );
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(
            tls.root_cert,
            Some(RootCerts::File(PathBuf::from("/etc/ca x.pem")))
        );
        assert_eq!(config.get_options(), Some("-csearch_path=mine"));
        assert!(
            config
                .get_hosts()
                .contains(&tokio_postgres::config::Host::Unix(
                    "/var/run/postgresql".into()
                )),
            "{:?}",
            config.get_hosts()
        );
    }

    #[test]
    fn key_value_strings_are_read_as_libpq_reads_them() {
        let (config, tls) = parsed(
            "host=db.example  port = 5433 sslmode=verify-full sslrootcert='/etc/my ca.pem' \
             password='it\\'s' dbname=mail",
        );
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(
            tls.root_cert,
            Some(RootCerts::File(PathBuf::from("/etc/my ca.pem")))
        );
        assert_eq!(config.get_ssl_mode(), Driver::Require);
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
        assert_eq!(config.get_dbname(), Some("mail"));
        assert_eq!(config.get_ports(), [5433]);
    }

    #[test]
    fn bad_tls_settings_are_refused_with_a_reason() {
        let unknown = refusal("postgres://u@localhost/mail?sslmode=always");
        assert!(
            unknown.contains("sslmode=always is not one of"),
            "{unknown}"
        );
        for mode in ["verify-ca", "verify-full"] {
            let missing = refusal(&format!("postgres://u@localhost/mail?sslmode={mode}"));
            assert!(
                missing.contains(&format!("sslmode={mode} needs sslrootcert")),
                "{missing}"
            );
        }
        for mode in ["require", "verify-ca", "prefer", "disable"] {
            let weak = refusal(&format!(
                "postgres://u@localhost/mail?sslmode={mode}&sslrootcert=system"
            ));
            assert!(
                weak.contains("sslrootcert=system needs sslmode=verify-full"),
                "{weak}"
            );
        }
        let encoding = refusal("postgres://u@localhost/mail?sslrootcert=%zz");
        assert!(encoding.contains("bad percent-encoding"), "{encoding}");
        let quoted = refusal("host=localhost sslrootcert='/ca.pem");
        assert!(quoted.contains("unterminated"), "{quoted}");
        let other = refusal("postgres://u@localhost/mail?sslcert=/client.pem");
        assert!(other.contains("sslcert"), "{other}");
    }

    #[test]
    fn sslrootcert_system_means_the_systems_roots_and_verify_full() {
        for url in [
            "postgres://u@localhost/mail?sslrootcert=system",
            "postgres://u@localhost/mail?sslmode=verify-full&sslrootcert=system",
            "host=localhost sslrootcert=system",
        ] {
            let (config, tls) = parsed(url);
            assert_eq!(tls.mode, SslMode::VerifyFull, "{url}");
            assert_eq!(tls.root_cert, Some(RootCerts::System), "{url}");
            assert_eq!(config.get_ssl_mode(), Driver::Require, "{url}");
        }
    }

    #[test]
    fn a_root_file_that_holds_no_certificate_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let tls = DatabaseTls {
            mode: SslMode::VerifyFull,
            root_cert: Some(RootCerts::File(path.clone())),
        };
        let error = connector(&tls).err().unwrap().to_string();
        assert!(error.contains("holds no certificate"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
        let missing = DatabaseTls {
            mode: SslMode::VerifyCa,
            root_cert: Some(RootCerts::File(dir.path().join("absent.pem"))),
        };
        let error = connector(&missing).err().unwrap().to_string();
        assert!(error.contains("cannot read"), "{error}");
    }
}
