//! TLS termination for `serve --tls-cert/--tls-key`: loads a PEM certificate chain and key
//! into a rustls server configuration, and a listener that hands axum only connections whose
//! handshake completed (handshakes run concurrently, so a slow client cannot stall accepts).
//! At load it also checks the chain as a client would, so that a certificate clients will
//! refuse is said at start rather than found by each client's failed handshake.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig as RustlsConfig;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate that expires sooner than this is worth a warning at start.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("cannot read the TLS key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("the TLS certificate and key do not fit together: {0}")]
    Config(String),
}

/// Certificate chain and private key (PEM files) for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A server configuration and what a client would object to in its certificate chain.
pub struct Loaded {
    pub config: Arc<RustlsConfig>,
    /// One sentence for the log at start; none when clients will accept the chain (as far as
    /// can be told without knowing their trusted roots and the name they use).
    pub warning: Option<String>,
}

/// A rustls server configuration from PEM files, offering HTTP/1.1.
pub fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let certs = read_certs(&files.cert)?;
    let warning = chain_warning(&certs, UnixTime::now());
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        message: e.to_string(),
    })?;
    let mut cfg = RustlsConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(cfg),
        warning,
    })
}

/// What a client's path check will refuse in `certs` (the server's own first) at `now`, or
/// soon after. The check runs with no trusted roots: the properties a certificate has on its
/// own (validity, CA or not, key usage) are checked before any issuer is looked for, so they
/// are found whatever roots the clients trust; "unknown issuer" is then the expected answer.
fn chain_warning(certs: &[CertificateDer<'_>], now: UnixTime) -> Option<String> {
    let (own, chain) = certs.split_first()?;
    // A certificate webpki cannot parse is rustls's to refuse, when it loads the key.
    let leaf = webpki::EndEntityCert::try_from(own).ok()?;
    let verify = |at: UnixTime| {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[],
            chain,
            at,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .err()
    };
    match verify(now) {
        Some(webpki::Error::CaUsedAsEndEntity) => Some(
            "the TLS certificate is a CA certificate (basicConstraints CA:TRUE): clients built \
             on rustls, agentpool's workers and CLI among them, refuse it as a server's own; \
             serve a certificate signed by it (CA:FALSE) instead"
                .to_string(),
        ),
        Some(webpki::Error::CertExpired { not_after, .. }) => Some(format!(
            "a certificate of the TLS chain expired at {}: clients refuse it",
            rfc3339(not_after)
        )),
        Some(webpki::Error::CertNotValidYet { not_before, .. }) => Some(format!(
            "a certificate of the TLS chain is not valid before {}: clients refuse it until then",
            rfc3339(not_before)
        )),
        Some(webpki::Error::RequiredEkuNotFoundContext(_)) => Some(
            "the TLS certificate's extended key usage leaves out server authentication: clients \
             refuse it"
                .to_string(),
        ),
        _ => {
            let soon =
                UnixTime::since_unix_epoch(Duration::from_secs(now.as_secs()).saturating_add(EXPIRY_WARNING));
            match verify(soon) {
                Some(webpki::Error::CertExpired { not_after, .. }) => Some(format!(
                    "a certificate of the TLS chain expires at {}, in less than 14 days",
                    rfc3339(not_after)
                )),
                _ => None,
            }
        }
    }
}

fn rfc3339(t: UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map_or_else(|| format!("{} s after 1970", t.as_secs()), |d| d.to_rfc3339())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Cert {
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// An [`axum::serve::Listener`] yielding TLS connections.
pub struct TlsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Accept on `tcp` and run each handshake in its own task. Failed handshakes (a client
    /// that does not trust the certificate, plain HTTP) are logged at debug level and dropped.
    pub fn new(tcp: TcpListener, config: Arc<RustlsConfig>) -> io::Result<Self> {
        let addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                let acceptor = acceptor.clone();
                let ready_tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready_tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Self { addr, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop ended (it only does when this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, date_time_ymd,
    };

    use super::*;

    fn day(y: i32, m: u32, d: u32) -> UnixTime {
        let t = chrono::NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap()
            .and_utc()
            .timestamp();
        UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(t).unwrap()))
    }

    /// A CA valid 2020 to `ca_until`, and a server certificate it signs, valid 2020 to 2030,
    /// made by `shape`: the server's chain, its own certificate first.
    fn chain(ca_until: i32, shape: impl FnOnce(&mut CertificateParams)) -> Vec<CertificateDer<'static>> {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "a CA");
        ca.not_before = date_time_ymd(2020, 1, 1);
        ca.not_after = date_time_ymd(ca_until, 1, 1);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca.self_signed(&ca_key).unwrap();
        let mut own = CertificateParams::new(vec!["agentpool.example.com".to_string()]).unwrap();
        own.not_before = date_time_ymd(2020, 1, 1);
        own.not_after = date_time_ymd(2030, 1, 1);
        shape(&mut own);
        let own = own
            .signed_by(&KeyPair::generate().unwrap(), &ca, &ca_key)
            .unwrap();
        vec![own.der().clone(), ca.der().clone()]
    }

    #[test]
    fn a_certificate_clients_accept_gets_no_warning() {
        assert_eq!(chain_warning(&chain(2040, |_| {}), day(2025, 6, 1)), None);
        let server_auth = |p: &mut CertificateParams| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        };
        assert_eq!(chain_warning(&chain(2040, server_auth), day(2025, 6, 1)), None);
    }

    #[test]
    fn a_certificate_past_or_near_its_end_is_told_with_the_date() {
        let certs = chain(2040, |_| {});
        let soon = chain_warning(&certs, day(2029, 12, 20)).unwrap();
        assert_eq!(
            soon,
            "a certificate of the TLS chain expires at 2030-01-01T00:00:00+00:00, in less than 14 days"
        );
        let past = chain_warning(&certs, day(2030, 2, 1)).unwrap();
        assert_eq!(
            past,
            "a certificate of the TLS chain expired at 2030-01-01T00:00:00+00:00: clients refuse it"
        );
        let early = chain_warning(&certs, day(2019, 6, 1)).unwrap();
        assert!(
            early.contains("not valid before 2020-01-01T00:00:00+00:00"),
            "{early}"
        );
    }

    #[test]
    fn the_chain_s_other_certificates_are_checked_too() {
        // The CA in the chain ends in 2028, before the server's own certificate does.
        let w = chain_warning(&chain(2028, |_| {}), day(2028, 6, 1)).unwrap();
        assert!(w.contains("expired at 2028-01-01T00:00:00+00:00"), "{w}");
    }

    #[test]
    fn a_ca_certificate_or_one_for_clients_only_is_told() {
        let ca = chain(2040, |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
        let w = chain_warning(&ca, day(2025, 6, 1)).unwrap();
        assert!(
            w.contains("is a CA certificate (basicConstraints CA:TRUE)"),
            "{w}"
        );
        let client_only = chain(2040, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        });
        let w = chain_warning(&client_only, day(2025, 6, 1)).unwrap();
        assert!(w.contains("leaves out server authentication"), "{w}");
    }
}
