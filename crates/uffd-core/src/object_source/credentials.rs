//! Where S3 credentials come from when they are not given as keys: a web identity token exchanged
//! at STS (EKS's service accounts), a container credentials endpoint (ECS, EKS Pod Identity), the
//! instance metadata service (only when asked), or the caller pushing them (a provider function in
//! JavaScript) before they expire. Every address and file is the caller's: nothing here reads the
//! environment. Temporary credentials are fetched again before they expire.

use async_trait::async_trait;
use object_store::aws::AwsCredential;
use object_store::CredentialProvider;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How long before their expiry credentials are fetched again.
const EARLY: Duration = Duration::from_secs(5 * 60);

/// A source of credentials other than static keys.
#[derive(Debug, Clone)]
pub enum CredentialSource {
    /// AssumeRoleWithWebIdentity at STS with the token in `token_file` (read at each exchange:
    /// it is rotated), as EKS's service accounts give it.
    WebIdentity { token_file: String, role_arn: String, session_name: Option<String>, sts_endpoint: Option<String> },
    /// A GET of `uri`, with `Authorization` from `token` or `token_file` (read at each request),
    /// answering `{ AccessKeyId, SecretAccessKey, Token, Expiration }`: ECS's task role endpoint,
    /// EKS Pod Identity's agent.
    Container { uri: String, token: Option<String>, token_file: Option<String> },
    /// The instance metadata service at `endpoint` (IMDSv2).
    InstanceMetadata { endpoint: String },
    /// Set by the caller, and set again before they expire.
    Pushed(Arc<Pushed>),
}

/// Credentials the caller sets (and sets again before they expire).
#[derive(Debug, Default)]
pub struct Pushed {
    current: Mutex<Option<Arc<AwsCredential>>>,
}

impl Pushed {
    pub fn set(&self, key_id: String, secret_key: String, token: Option<String>) {
        let credential = Arc::new(AwsCredential { key_id, secret_key, token });
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(credential);
    }
}

#[async_trait]
impl CredentialProvider for Pushed {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        current.ok_or_else(|| generic("the credentials provider has given no credentials yet".into()))
    }
}

/// A container credentials endpoint, its answer kept until shortly before it expires.
#[derive(Debug)]
pub struct Container {
    uri: String,
    token: Option<String>,
    token_file: Option<String>,
    client: reqwest::Client,
    cache: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl Container {
    pub fn new(uri: String, token: Option<String>, token_file: Option<String>, client: reqwest::Client) -> Self {
        Container { uri, token, token_file, client, cache: tokio::sync::Mutex::new(None) }
    }

    async fn fetch(&self) -> object_store::Result<(Arc<AwsCredential>, Option<SystemTime>)> {
        let mut request = self.client.get(&self.uri);
        let token = match &self.token_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| generic(format!("the container authorization token file {file:?}: {e}")))?
                    .trim()
                    .to_string(),
            ),
            None => self.token.clone(),
        };
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        let failed = |what: String| generic(format!("container credentials from {}: {what}", self.uri));
        let response = request.send().await.map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            return Err(failed(format!("HTTP {}: {}", status.as_u16(), body.chars().take(200).collect::<String>())));
        }
        let answer: ContainerAnswer =
            serde_json::from_str(&body).map_err(|e| failed(format!("not credentials: {e}")))?;
        let expires = match answer.expiration.as_deref() {
            Some(text) => Some(
                chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|e| failed(format!("an expiration that is not a time ({text:?}): {e}")))?
                    .into(),
            ),
            None => None,
        };
        let credential =
            AwsCredential { key_id: answer.access_key_id, secret_key: answer.secret_access_key, token: answer.token };
        Ok((Arc::new(credential), expires))
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerAnswer {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
}

#[async_trait]
impl CredentialProvider for Container {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cache = self.cache.lock().await;
        if let Some((credential, expires)) = cache.as_ref() {
            let fresh = expires.is_none_or(|at| at.checked_sub(EARLY).is_some_and(|due| SystemTime::now() < due));
            if fresh {
                return Ok(credential.clone());
            }
        }
        let (credential, expires) = self.fetch().await?;
        *cache = Some((credential.clone(), expires));
        Ok(credential)
    }
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic { store: "S3", source: message.into() }
}
