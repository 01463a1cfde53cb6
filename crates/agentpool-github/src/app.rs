//! GitHub App authentication: the App's private key (PEM, PKCS#1 as GitHub hands it out, or
//! PKCS#8), the short-lived JWT signed with it (RS256), and the installation access tokens
//! minted with that JWT, scoped to one repository and the fewest permissions. Neither the key
//! nor a token appears in `Debug` output or in an error.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::client::GithubClient;
use crate::http::{ForgeError, Result};

/// Seconds the JWT's `iat` is set in the past, against clock drift (GitHub's advice).
const IAT_SKEW_SECS: u64 = 60;
/// Seconds the JWT lives after `iat`; GitHub refuses more than 10 minutes.
const JWT_LIFETIME_SECS: u64 = 9 * 60;

/// The permissions asked for a token, as GitHub names them (`app-permissions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Permissions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contents: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_requests: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issues: Option<&'static str>,
}

impl Permissions {
    /// A worker's: clone and push the task's branch, nothing else.
    pub const PUSH: Permissions = Permissions {
        contents: Some("write"),
        pull_requests: None,
        issues: None,
    };
    /// The server's: open pull requests and write the status comment.
    pub const REPORT: Permissions = Permissions {
        contents: None,
        pull_requests: Some("write"),
        issues: Some("write"),
    };
}

/// A GitHub App's private key, parsed once.
pub struct AppKey {
    key: RsaKeyPair,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(<redacted>)")
    }
}

impl AppKey {
    /// Parse a PEM private key: `BEGIN RSA PRIVATE KEY` (PKCS#1, what GitHub generates) or
    /// `BEGIN PRIVATE KEY` (PKCS#8).
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        let bad = |why: &str| ForgeError::Config(format!("the GitHub App private key {why}"));
        let key = if let Ok(der) = PrivatePkcs1KeyDer::from_pem_slice(pem) {
            RsaKeyPair::from_der(der.secret_pkcs1_der())
                .map_err(|_| bad("is not a usable RSA key (PKCS#1)"))?
        } else if let Ok(der) = PrivatePkcs8KeyDer::from_pem_slice(pem) {
            RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
                .map_err(|_| bad("is not a usable RSA key (PKCS#8)"))?
        } else {
            return Err(bad(
                "is not a PEM RSA private key (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)",
            ));
        };
        Ok(Self { key })
    }

    /// The public key (DER `RSAPublicKey`), to check signatures with.
    pub fn public_key_der(&self) -> &[u8] {
        use ring::signature::KeyPair;
        self.key.public_key().as_ref()
    }

    /// The JWT that authenticates as App `app_id` at Unix time `now`: RS256, `iat` a minute in
    /// the past, `exp` nine minutes after it, `iss` the App's id.
    pub fn jwt(&self, app_id: u64, now: u64) -> Result<String> {
        #[derive(Serialize)]
        struct Claims {
            iat: u64,
            exp: u64,
            iss: String,
        }
        let iat = now.saturating_sub(IAT_SKEW_SECS);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::to_vec(&Claims {
            iat,
            exp: iat + JWT_LIFETIME_SECS,
            iss: app_id.to_string(),
        })
        .map_err(|e| ForgeError::Config(e.to_string()))?;
        let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| ForgeError::Config("cannot sign the GitHub App JWT".into()))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// An installation access token. `Debug` hides the token.
#[derive(Clone, Deserialize)]
pub struct InstallationToken {
    pub token: String,
    /// When GitHub expires it (RFC 3339; an hour after minting).
    pub expires_at: String,
}

impl std::fmt::Debug for InstallationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

#[derive(Serialize)]
struct TokenRequest<'a> {
    repositories: [&'a str; 1],
    permissions: Permissions,
}

/// A GitHub App: its id, its key and the API it talks to.
#[derive(Debug)]
pub struct GithubApp {
    base: String,
    app_id: u64,
    key: AppKey,
}

impl GithubApp {
    pub fn new(base: &str, app_id: u64, key: AppKey) -> Self {
        Self {
            base: base.to_string(),
            app_id,
            key,
        }
    }

    pub fn app_id(&self) -> u64 {
        self.app_id
    }

    fn client(&self) -> Result<GithubClient> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        GithubClient::new(&self.base, &self.key.jwt(self.app_id, now)?)
    }

    /// The App's installation on `repo`'s account (`GET /repos/{owner}/{repo}/installation`).
    pub async fn installation_for(&self, repo: &str) -> Result<u64> {
        let i: Installation = self
            .client()?
            .get(
                "get repository installation",
                &format!("/repos/{repo}/installation"),
            )
            .await?;
        Ok(i.id)
    }

    /// Mint a token of `installation` for repository `repo` (`owner/name`) only, with
    /// `permissions` only.
    pub async fn installation_token(
        &self,
        installation: u64,
        repo: &str,
        permissions: Permissions,
    ) -> Result<InstallationToken> {
        let name = repo.rsplit('/').next().unwrap_or(repo);
        self.client()?
            .post(
                "create installation access token",
                &format!("/app/installations/{installation}/access_tokens"),
                &TokenRequest {
                    repositories: [name],
                    permissions,
                },
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
    use serde_json::Value;

    use super::*;

    // TEST-ONLY keys (tests/fixtures/README.md): registered with no GitHub App.
    const PKCS1: &str = include_str!("../tests/fixtures/TEST-ONLY-github-app-key.pem");
    const PKCS8: &str = include_str!("../tests/fixtures/TEST-ONLY-github-app-key-pkcs8.pem");

    fn part(jwt: &str, i: usize) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(i).expect("part"))
            .expect("base64url")
    }

    #[test]
    fn the_jwt_is_rs256_signed_by_the_app_key_with_githubs_time_limits() {
        let key = AppKey::from_pem(PKCS1.as_bytes()).expect("PKCS#1");
        let now = 1_700_000_000;
        let jwt = key.jwt(42, now).expect("jwt");
        assert_eq!(jwt.split('.').count(), 3);
        let header: Value = serde_json::from_slice(&part(&jwt, 0)).expect("header");
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        let claims: Value = serde_json::from_slice(&part(&jwt, 1)).expect("claims");
        assert_eq!(claims["iss"], "42");
        let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
        assert_eq!(iat, now - 60, "iat a minute in the past");
        assert!(
            exp > now && exp - iat <= 600,
            "GitHub refuses more than 10 minutes"
        );
        let (signed, _) = jwt.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key_der())
            .verify(signed.as_bytes(), &part(&jwt, 2))
            .expect("the signature verifies with the App's public key");
        // Anything else signed does not.
        assert!(
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key_der())
                .verify(b"other", &part(&jwt, 2))
                .is_err()
        );
    }

    #[test]
    fn pkcs8_keys_are_accepted_and_are_the_same_key() {
        let a = AppKey::from_pem(PKCS1.as_bytes()).expect("PKCS#1");
        let b = AppKey::from_pem(PKCS8.as_bytes()).expect("PKCS#8");
        assert_eq!(a.public_key_der(), b.public_key_der());
    }

    #[test]
    fn a_bad_key_is_a_clear_error_that_shows_no_key_material() {
        let cut = &PKCS1[..PKCS1.len() / 2];
        for pem in ["not a key", cut] {
            let e = AppKey::from_pem(pem.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("private key"), "{e}");
            assert!(!e.contains("MII"), "{e}");
        }
        let key = AppKey::from_pem(PKCS1.as_bytes()).unwrap();
        assert_eq!(format!("{key:?}"), "AppKey(<redacted>)");
    }

    #[test]
    fn the_token_request_names_one_repository_and_asks_for_little() {
        let body = serde_json::to_value(TokenRequest {
            repositories: ["Hello-World"],
            permissions: Permissions::PUSH,
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"repositories": ["Hello-World"], "permissions": {"contents": "write"}})
        );
        let t = InstallationToken {
            token: "ghs_secret".into(),
            expires_at: "2030-01-01T00:00:00Z".into(),
        };
        assert!(!format!("{t:?}").contains("ghs_secret"));
    }
}
