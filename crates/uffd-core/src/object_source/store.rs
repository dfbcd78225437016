//! Where an object lives and how to reach it: the URL (`s3://bucket/key`, `http(s)://host/path`),
//! the endpoint, region and credentials, built into an `object_store` client that asks no one else
//! for anything. Nothing here reads the environment: the caller passes every value (the TypeScript
//! layer reads `AWS_*` the way the AWS SDKs do). No request goes to an instance-metadata endpoint,
//! a container-credentials endpoint or STS unless the caller names it (`credentials.rs`), and none
//! to a proxy from the environment: the HTTP client is built here with no proxy.

use super::credentials::{Container, CredentialSource};
use crate::error::{Advice, Error, Result};
use nix::errno::Errno;
use object_store::aws::AmazonS3ConfigKey;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::client::{HttpClient, HttpConnector, HttpError, HttpErrorKind};
use object_store::http::HttpBuilder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, RetryConfig, StaticCredentialProvider};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const OP: &str = "objectStore";

/// What an object URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `s3://bucket/key`
    S3 { bucket: String, key: String },
    /// `http://host:port/path` or `https://...`: plain Range GETs.
    Http { base: String, path: String },
    /// `az://container/blob`: a blob of an Azure storage account (named in the options).
    Azure { container: String, blob: String },
}

impl Location {
    pub fn parse(url: &str) -> Result<Location> {
        let bad = |why: &str| Error::invalid(OP, format!("{url:?} {why}"));
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| bad("is not a URL (s3://bucket/key, https://host/path)"))?;
        match scheme {
            "s3" | "s3a" => {
                let (bucket, key) = rest.split_once('/').ok_or_else(|| bad("names no key: s3://bucket/key"))?;
                if bucket.is_empty() || key.is_empty() {
                    return Err(bad("names no bucket or no key: s3://bucket/key"));
                }
                Ok(Location::S3 { bucket: bucket.into(), key: key.into() })
            }
            "http" | "https" => {
                let (host, path) = rest.split_once('/').ok_or_else(|| bad("names no path"))?;
                if host.is_empty() || path.is_empty() {
                    return Err(bad("names no host or no path"));
                }
                Ok(Location::Http { base: format!("{scheme}://{host}"), path: path.into() })
            }
            "az" | "azure" => {
                let (container, blob) =
                    rest.split_once('/').ok_or_else(|| bad("names no blob: az://container/blob"))?;
                if container.is_empty() || blob.is_empty() {
                    return Err(bad("names no container or no blob: az://container/blob"));
                }
                Ok(Location::Azure { container: container.into(), blob: blob.into() })
            }
            "gs" => Err(Error::unsupported(
                OP,
                format!(
                    "{url:?}: gs:// is not supported: no Google Cloud Storage emulator from the registries this \
                     package is tested with could check it; use s3:// (Cloud Storage's XML API is S3-compatible: \
                     s3:// with endpoint https://storage.googleapis.com and HMAC keys) or https://"
                ),
            )),
            _ => Err(bad("has a scheme this source does not read (s3, az, http, https)")),
        }
    }

    /// The object's key in its bucket (or path on its host).
    pub fn key(&self) -> &str {
        match self {
            Location::S3 { key, .. } => key,
            Location::Http { path, .. } => path,
            Location::Azure { blob, .. } => blob,
        }
    }

    /// The URL of another object of the same bucket (or host), by key.
    pub fn url_of(&self, key: &str) -> String {
        match self {
            Location::S3 { bucket, .. } => format!("s3://{bucket}/{key}"),
            Location::Http { base, .. } => format!("{base}/{key}"),
            Location::Azure { container, .. } => format!("az://{container}/{key}"),
        }
    }

    /// Whether `other` is in the same bucket (or on the same host): a client of one reaches both.
    pub fn same_store(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::S3 { bucket: a, .. }, Location::S3 { bucket: b, .. }) => a == b,
            (Location::Http { base: a, .. }, Location::Http { base: b, .. }) => a == b,
            (Location::Azure { container: a, .. }, Location::Azure { container: b, .. }) => a == b,
            _ => false,
        }
    }

    /// The `object_store` path of another object of the same bucket (or host), by key.
    pub(crate) fn path_of(&self, key: &str) -> Result<Path> {
        match self {
            Location::S3 { .. } | Location::Azure { .. } => Ok(Path::from(key)),
            Location::Http { .. } => {
                Path::from_url_path(key).map_err(|e| Error::invalid(OP, format!("{}: {e}", self.url_of(key))))
            }
        }
    }
}

/// Static S3 credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ access_key_id: {:?}, .. }}", self.access_key_id)
    }
}

/// An Azure storage account: its name and its shared key or SAS token (neither with `anonymous`).
#[derive(Clone, PartialEq, Eq)]
pub struct AzureAccount {
    pub name: String,
    pub key: Option<String>,
    /// A SAS token (`sv=...&sig=...`, with or without its leading `?`).
    pub sas: Option<String>,
}

impl std::fmt::Debug for AzureAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AzureAccount {{ name: {:?}, .. }}", self.name)
    }
}

/// How to reach the store. Every value is explicit.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The S3 endpoint (`http://127.0.0.1:8333`); `None`: AWS's own for the region.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub credentials: Option<Credentials>,
    /// Where credentials come from when they are not keys (a web identity, a container endpoint,
    /// instance metadata, the caller).
    pub credential_source: Option<CredentialSource>,
    /// Unsigned requests, for a public bucket. Without credentials this must be said.
    pub anonymous: bool,
    /// `bucket.host` requests instead of `host/bucket` (path style, the default).
    pub virtual_hosted_style: bool,
    /// For `az://`: the storage account and how its requests are signed.
    pub azure: Option<AzureAccount>,
    pub connect_timeout: Duration,
    /// The bound of one request, body included.
    pub request_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            endpoint: None,
            region: None,
            credentials: None,
            credential_source: None,
            anonymous: false,
            virtual_hosted_style: false,
            azure: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The store client and the object's path in it.
pub(crate) fn connect(location: &Location, options: &StoreOptions) -> Result<(Arc<dyn ObjectStore>, Path)> {
    // Retries are the source's own (fetch.rs): counted, bounded, and reported with their cause.
    let retry = RetryConfig { max_retries: 0, ..Default::default() };
    let client_options = ClientOptions::new().with_allow_http(true);
    match location {
        Location::S3 { bucket, key } => {
            let region = options.region.clone().unwrap_or_else(|| "us-east-1".into());
            let endpoint = options.endpoint.as_deref().map(checked_endpoint).transpose()?;
            let endpoint = match (&endpoint, options.virtual_hosted_style) {
                (Some(e), true) => Some(with_bucket_host(e, bucket)?),
                _ => endpoint,
            };
            let connector = Connector::new(options, endpoint.as_deref());
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(&region)
                .with_virtual_hosted_style_request(options.virtual_hosted_style)
                // Should anything ask the instance metadata service unasked, it asks a closed
                // loopback port.
                .with_metadata_endpoint("http://127.0.0.1:1")
                .with_retry(retry)
                .with_client_options(client_options);
            let unsigned = AwsCredential { key_id: String::new(), secret_key: String::new(), token: None };
            builder = match (&options.credentials, &options.credential_source, options.anonymous) {
                (Some(c), _, _) => builder.with_credentials(Arc::new(StaticCredentialProvider::new(AwsCredential {
                    key_id: c.access_key_id.clone(),
                    secret_key: c.secret_access_key.clone(),
                    token: c.session_token.clone(),
                }))),
                (None, Some(CredentialSource::Pushed(pushed)), _) => builder.with_credentials(pushed.clone()),
                (None, Some(CredentialSource::Container { uri, token, token_file }), _) => {
                    let client = connector.client().map_err(|e| remote_error(OP, uri, &e))?;
                    builder.with_credentials(Arc::new(Container::new(
                        uri.clone(),
                        token.clone(),
                        token_file.clone(),
                        client,
                    )))
                }
                // The store's own providers, chosen by its builder from these keys: they refresh
                // before expiry.
                (None, Some(CredentialSource::WebIdentity { token_file, role_arn, session_name, sts_endpoint }), _) => {
                    let mut builder = builder
                        .with_config(AmazonS3ConfigKey::WebIdentityTokenFile, token_file)
                        .with_config(AmazonS3ConfigKey::RoleArn, role_arn);
                    if let Some(name) = session_name {
                        builder = builder.with_config(AmazonS3ConfigKey::RoleSessionName, name);
                    }
                    if let Some(sts) = sts_endpoint {
                        builder = builder.with_config(AmazonS3ConfigKey::StsEndpoint, checked_endpoint(sts)?);
                    }
                    builder
                }
                (None, Some(CredentialSource::InstanceMetadata { endpoint }), _) => {
                    builder.with_metadata_endpoint(checked_endpoint(endpoint)?)
                }
                // Never signed: the placeholder only keeps the builder from choosing a provider.
                (None, None, true) => builder
                    .with_credentials(Arc::new(StaticCredentialProvider::new(unsigned)))
                    .with_skip_signature(true),
                (None, None, false) => {
                    return Err(Error::invalid(OP, format!("no credentials for s3://{bucket}/{key}"))
                        .with_advice(Advice::S3Credentials))
                }
            };
            builder = builder.with_http_connector(connector);
            if let Some(endpoint) = endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            let store = builder.build().map_err(|e| remote_error(OP, &format!("s3://{bucket}/{key}"), &e))?;
            Ok((Arc::new(store), Path::from(key.as_str())))
        }
        Location::Azure { container, blob } => {
            let url = format!("az://{container}/{blob}");
            let store = azure(container, &url, options, retry, client_options)?;
            Ok((store, Path::from(blob.as_str())))
        }
        Location::Http { base, path } => {
            let store = HttpBuilder::new()
                .with_url(base)
                .with_retry(retry)
                .with_client_options(client_options)
                .with_http_connector(Connector::new(options, Some(base)))
                .build()
                .map_err(|e| remote_error(OP, &format!("{base}/{path}"), &e))?;
            let path = Path::from_url_path(path).map_err(|e| Error::invalid(OP, format!("{base}/{path}: {e}")))?;
            Ok((Arc::new(store), path))
        }
    }
}

/// An Azure blob store client for `container`: the account's endpoint (`https://ACCOUNT.blob.core.windows.net`
/// unless one is given, e.g. Azurite's `http://127.0.0.1:10000/devstoreaccount1`), signed with the
/// account's shared key or SAS token, or unsigned. Never a managed identity or any other provider
/// that would ask a metadata endpoint: without a key, a token or `anonymous`, it is refused.
fn azure(
    container: &str,
    url: &str,
    options: &StoreOptions,
    retry: RetryConfig,
    client_options: ClientOptions,
) -> Result<Arc<dyn ObjectStore>> {
    use object_store::azure::{AzureConfigKey, AzureCredential, MicrosoftAzureBuilder};
    let account = options
        .azure
        .as_ref()
        .ok_or_else(|| Error::invalid(OP, format!("no storage account for {url}")).with_advice(Advice::AzureAccount))?;
    let endpoint = match &options.endpoint {
        Some(endpoint) => path_style_named(checked_endpoint(endpoint)?, &account.name)?,
        None => format!("https://{}.blob.core.windows.net", account.name),
    };
    let mut builder = MicrosoftAzureBuilder::new()
        .with_account(&account.name)
        .with_container_name(container)
        .with_endpoint(endpoint.clone())
        .with_retry(retry)
        .with_client_options(client_options)
        .with_http_connector(Connector::new(options, Some(&endpoint)));
    // The client takes a key that is not base64, or a token that is not query pairs, and fails
    // later as an I/O error; said here, by name.
    if let Some(key) = &account.key {
        use base64::Engine as _;
        if let Err(e) = base64::engine::general_purpose::STANDARD.decode(key) {
            return Err(Error::invalid(
                OP,
                format!("the account key for {url} is not base64 ({e}): give the key as the portal shows it"),
            ));
        }
    }
    if let Some(sas) = account.sas.as_deref().filter(|_| account.key.is_none()) {
        let pairs = sas.trim_start_matches('?');
        if pairs.is_empty() || pairs.split('&').any(|pair| !pair.contains('=')) {
            return Err(Error::invalid(
                OP,
                format!("the SAS token for {url} is not query pairs (sv=...&sig=...): give the token as Azure made it"),
            ));
        }
    }
    builder = match (&account.key, &account.sas, options.anonymous) {
        (Some(key), _, _) => builder.with_access_key(key).with_config(AzureConfigKey::CredentialType, "access_key"),
        (None, Some(sas), _) => builder
            .with_config(AzureConfigKey::SasKey, sas.trim_start_matches('?'))
            .with_config(AzureConfigKey::CredentialType, "sas_token"),
        // Never signed: the placeholder only keeps the builder from choosing a provider.
        (None, None, true) => builder
            .with_credentials(Arc::new(StaticCredentialProvider::new(AzureCredential::SASToken(Vec::new()))))
            .with_skip_signature(true),
        (None, None, false) => {
            return Err(Error::invalid(OP, format!("no credentials for {url}")).with_advice(Advice::AzureCredentials))
        }
    };
    let store = builder.build().map_err(|e| remote_error(OP, url, &e))?;
    Ok(Arc::new(store))
}

/// An Azure endpoint at an address (an emulator such as Azurite, on loopback) must name its
/// account as its path: one without is refused, with the URL it should be (the store's answer
/// would be a bare 400).
fn path_style_named(endpoint: String, account: &str) -> Result<String> {
    let Ok(url) = url::Url::parse(&endpoint) else { return Ok(endpoint) };
    let at_address =
        matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))) || url.host_str() == Some("localhost");
    if at_address && url.path().trim_matches('/').is_empty() {
        return Err(Error::invalid(
            OP,
            format!(
                "endpoint {endpoint:?} names no account: at an address, an emulator such as Azurite serves each \
                 account under its name ({endpoint}/{account})"
            ),
        ));
    }
    Ok(endpoint)
}

/// The endpoint without a trailing `/`, or EINVAL naming it unless it is an `http://` or
/// `https://` URL with a host (the store's client would panic on one without a scheme).
fn checked_endpoint(endpoint: &str) -> Result<String> {
    let refused = |why: &str| Error::invalid(OP, format!("endpoint {endpoint:?} {why}")).with_advice(Advice::Endpoint);
    let url = url::Url::parse(endpoint).map_err(|e| refused(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refused("is not http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refused("names no host"));
    }
    Ok(endpoint.trim_end_matches('/').to_string())
}

/// `http://host:port` with the bucket as the first label of the host: `http://bucket.host:port`.
fn with_bucket_host(endpoint: &str, bucket: &str) -> Result<String> {
    let (scheme, host) =
        endpoint.split_once("://").ok_or_else(|| Error::invalid(OP, format!("endpoint {endpoint:?} is not a URL")))?;
    if host.starts_with(&format!("{bucket}.")) {
        return Ok(endpoint.to_string());
    }
    Ok(format!("{scheme}://{bucket}.{host}"))
}

/// Builds the HTTP client: no proxy from the environment, the source's timeouts, and `localhost`
/// names (`bucket.localhost`, RFC 6761) resolved to the loopback address without asking DNS.
#[derive(Debug)]
struct Connector {
    connect_timeout: Duration,
    request_timeout: Duration,
    localhost: Option<String>,
}

impl Connector {
    fn new(options: &StoreOptions, endpoint: Option<&str>) -> Self {
        let host = endpoint
            .and_then(|e| e.split_once("://"))
            .map(|(_, rest)| rest.split(['/', ':']).next().unwrap_or_default().to_string())
            .filter(|host| host.ends_with(".localhost"));
        Connector {
            connect_timeout: options.connect_timeout,
            request_timeout: options.request_timeout,
            localhost: host,
        }
    }
}

impl Connector {
    /// The reqwest client of every request: the store's, and a credentials endpoint's.
    fn client(&self) -> object_store::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .pool_max_idle_per_host(64);
        if let Some(host) = &self.localhost {
            builder = builder.resolve(host, SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        builder.build().map_err(|e| object_store::Error::Generic { store: "uffd-object", source: Box::new(e) })
    }
}

impl HttpConnector for Connector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(self.client()?))
    }
}

/// An `object_store` error as the core's: the HTTP status where there was one, the errno that
/// stands for it (404 ENOENT, 401/403 EACCES, 412 ESTALE, 5xx EIO, a refused connection
/// ECONNREFUSED, a timeout ETIMEDOUT, a reset ECONNRESET), and the whole chain of causes.
pub(crate) fn remote_error(op: &'static str, what: &str, err: &object_store::Error) -> Error {
    let status = status_of(err);
    let errno = match status {
        Some(404) => Errno::ENOENT,
        Some(401 | 403) => Errno::EACCES,
        Some(412) => Errno::ESTALE,
        Some(_) => Errno::EIO,
        None => transport_errno(err).unwrap_or(Errno::EIO),
    };
    // A store's answer keeps the whole chain (its body says why); a transport failure says only
    // its first cause: the client's layers above it ("Generic S3 error: Error performing HEAD ...
    // HTTP error: error sending request: client error (Connect)") tell the reader nothing more.
    let text = chain(err);
    let detail = match status {
        // A HEAD's 404 has no body to tell a missing object from a missing bucket.
        Some(404) if text.contains("NoSuchBucket") || text.contains("ContainerNotFound") => {
            format!("{what}: HTTP 404: the bucket (or container) does not exist: {text}")
        }
        Some(404) if op == "HEAD" => {
            format!("{what}: HTTP 404: no such object (check the bucket or container, and the key): {text}")
        }
        // Some stores (SeaweedFS among them) answer a write to a missing bucket with 403.
        Some(status @ (401 | 403)) if op == "PUT" => format!(
            "{what}: HTTP {status}: refused (check the credentials, that they may write there, and that the \
             bucket exists): {text}"
        ),
        Some(status @ (401 | 403)) => {
            format!("{what}: HTTP {status}: refused (check the credentials, and that they may read it): {text}")
        }
        Some(status) => format!("{what}: HTTP {status}: {text}"),
        None => match origin_in(&text) {
            // Which host it tried: a store whose endpoint was left out is the public cloud's.
            Some(origin) if errno == Errno::EHOSTUNREACH => {
                format!("{what}: the host of {origin} did not resolve ({})", root_cause(err))
            }
            Some(origin) if errno == Errno::EPROTONOSUPPORT && origin.starts_with("https://") => format!(
                "{what}: {origin} did not answer in TLS ({}): if it serves plain HTTP, give the endpoint as \
                 http://",
                root_cause(err)
            ),
            Some(origin) => format!("{what}: {} (reaching {origin})", root_cause(err)),
            None => format!("{what}: {}", root_cause(err)),
        },
    };
    Error::Remote { op, errno, status, detail }
}

/// Whether a failed request may succeed if tried again: a 5xx, 408 or 429, or a transport error
/// (refused, reset, timed out). A 4xx, a changed object or a corrupt chunk is final.
pub(crate) fn transient(err: &Error) -> bool {
    match err {
        Error::Remote { status: Some(status), .. } => *status >= 500 || *status == 408 || *status == 429,
        Error::Remote { errno, status: None, .. } => {
            !matches!(*errno, Errno::ESTALE | Errno::EPROTO | Errno::EPROTONOSUPPORT)
        }
        _ => false,
    }
}

fn status_of(err: &object_store::Error) -> Option<u16> {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => Some(404),
        E::PermissionDenied { .. } => Some(403),
        E::Unauthenticated { .. } => Some(401),
        E::Precondition { .. } => Some(412),
        E::NotModified { .. } => Some(304),
        _ => {
            // The retry layer's error says "Server returned non-2xx status code: 503 ...".
            let text = chain(err);
            let at = text.find("status code: ")? + "status code: ".len();
            text[at..].get(..3)?.parse().ok()
        }
    }
}

/// The errno of a transport failure, from the first `io::Error` or `HttpError` in the chain.
fn transport_errno(err: &object_store::Error) -> Option<Errno> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut kind = None;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(raw) = io.raw_os_error() {
                return Some(Errno::from_raw(raw));
            }
        }
        if let Some(http) = e.downcast_ref::<HttpError>() {
            kind.get_or_insert(http.kind());
        }
        source = e.source();
    }
    let text = chain(err).to_lowercase();
    if text.contains("failed to lookup address") || text.contains("dns error") {
        return Some(Errno::EHOSTUNREACH);
    }
    // TLS that got something else back (a plain HTTP server at an https:// endpoint): no retry
    // can mend it. Not EPROTO, which says a chunk is corrupt (and is remembered as such).
    if text.contains("invalidcontenttype") || text.contains("received corrupt message") {
        return Some(Errno::EPROTONOSUPPORT);
    }
    if text.contains("connection refused") {
        return Some(Errno::ECONNREFUSED);
    }
    if text.contains("reset") || text.contains("connection closed") || text.contains("broken pipe") {
        return Some(Errno::ECONNRESET);
    }
    match kind? {
        HttpErrorKind::Timeout => Some(Errno::ETIMEDOUT),
        HttpErrorKind::Connect => Some(Errno::ECONNREFUSED),
        HttpErrorKind::Request | HttpErrorKind::Interrupted => Some(Errno::ECONNRESET),
        _ => Some(Errno::EIO),
    }
}

/// The scheme, host and port of the first URL in an error's text (the client names the URL it
/// requested).
fn origin_in(text: &str) -> Option<String> {
    let start = text.find("http://").or_else(|| text.find("https://"))?;
    let url = &text[start..];
    let host_start = url.find("://")? + 3;
    let end = url[host_start..].find(['/', ' ', '?']).map_or(url.len(), |at| host_start + at);
    Some(url[..end].to_string())
}

/// The innermost cause of an error: what went wrong at the bottom.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut root = err;
    while let Some(next) = root.source() {
        root = next;
    }
    root.to_string()
}

/// An error and its causes, in one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_failure_names_the_host_it_tried() {
        assert_eq!(
            origin_in("Generic S3 error: Error performing HEAD http://127.0.0.1:1/b/k in 305µs - HTTP error")
                .as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            origin_in("Error performing GET https://acct.blob.core.windows.net/c/b?sv=1 in 2ms").as_deref(),
            Some("https://acct.blob.core.windows.net")
        );
        assert_eq!(origin_in("no url here"), None);
        // A name that does not resolve is said so, with the host (an endpoint left out is the
        // public cloud's), not taken for a refused connection.
        let dns = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: "Error performing HEAD https://acct.blob.core.windows.net/c/b in 2ms - HTTP error: client error \
                     (Connect): dns error: failed to lookup address information: Name or service not known"
                .into(),
        };
        let error = remote_error("HEAD", "az://c/b", &dns);
        assert_eq!(error.code(), "EHOSTUNREACH");
        assert!(
            error.to_string().contains("az://c/b: the host of https://acct.blob.core.windows.net did not resolve"),
            "{error}"
        );
    }

    #[test]
    fn urls_name_a_bucket_and_key_or_a_host_and_path() {
        assert_eq!(
            Location::parse("s3://snap/vm/mem.bin").unwrap(),
            Location::S3 { bucket: "snap".into(), key: "vm/mem.bin".into() }
        );
        assert_eq!(
            Location::parse("http://127.0.0.1:8080/a/b").unwrap(),
            Location::Http { base: "http://127.0.0.1:8080".into(), path: "a/b".into() }
        );
        assert_eq!(Location::parse("s3://bucket").unwrap_err().code(), "EINVAL");
        assert_eq!(Location::parse("gs://b/k").unwrap_err().code(), "EOPNOTSUPP");
        assert_eq!(
            Location::parse("az://snaps/vm/mem.bin").unwrap(),
            Location::Azure { container: "snaps".into(), blob: "vm/mem.bin".into() }
        );
        assert_eq!(Location::parse("az://snaps").unwrap_err().code(), "EINVAL");
        assert_eq!(Location::parse("az:///blob").unwrap_err().code(), "EINVAL");
        assert_eq!(Location::parse("/tmp/x").unwrap_err().code(), "EINVAL");
    }

    #[test]
    fn no_credentials_is_an_error_before_any_request() {
        let location = Location::parse("s3://b/k").unwrap();
        let Err(err) = connect(&location, &StoreOptions::default()) else { panic!("no credentials must be refused") };
        assert!(err.to_string().contains("no credentials for s3://b/k"), "{err}");
        assert!(err.to_string().contains("anonymous"), "{err}");
        assert!(matches!(err, Error::Invalid { advice: Some(Advice::S3Credentials), .. }), "{err:?}");
    }

    #[test]
    fn an_azure_blob_needs_an_account_and_a_key_a_token_or_anonymous() {
        let location = Location::parse("az://c/b").unwrap();
        let Err(err) = connect(&location, &StoreOptions::default()) else { panic!("no account must be refused") };
        assert!(err.to_string().contains("no storage account for az://c/b"), "{err}");
        assert!(matches!(err, Error::Invalid { advice: Some(Advice::AzureAccount), .. }), "{err:?}");
        let azure = Some(AzureAccount { name: "acct".into(), key: None, sas: None });
        let options = StoreOptions { azure, ..StoreOptions::default() };
        let Err(err) = connect(&location, &options) else { panic!("no credentials must be refused") };
        assert!(err.to_string().contains("no managed identity is ever asked"), "{err}");
        assert!(matches!(err, Error::Invalid { advice: Some(Advice::AzureCredentials), .. }), "{err:?}");
        assert!(connect(&location, &StoreOptions { anonymous: true, ..options.clone() }).is_ok());
        let with = |key: Option<&str>, sas: Option<&str>| {
            let azure = Some(AzureAccount { name: "acct".into(), key: key.map(Into::into), sas: sas.map(Into::into) });
            connect(&location, &StoreOptions { azure, ..options.clone() }).err().map(|e| e.to_string())
        };
        assert!(with(Some("not base64!!"), None).unwrap().contains("the account key for az://c/b is not base64"));
        assert!(with(None, Some("hello")).unwrap().contains("the SAS token for az://c/b is not query pairs"));
        assert_eq!(with(Some("a2V5"), None), None);
        assert_eq!(with(None, Some("?sv=1&sig=x")), None);
        let bare = StoreOptions { endpoint: Some("http://127.0.0.1:10000/".into()), ..options.clone() };
        let Err(err) = connect(&location, &StoreOptions { anonymous: true, ..bare }) else { panic!("no account path") };
        assert!(err.to_string().contains("(http://127.0.0.1:10000/acct)"), "{err}");
        let named =
            StoreOptions { endpoint: Some("http://127.0.0.1:10000/acct".into()), anonymous: true, ..options.clone() };
        assert!(connect(&location, &named).is_ok());
    }

    #[test]
    fn an_endpoint_without_a_scheme_or_a_host_is_refused_by_name() {
        for bad in ["127.0.0.1:8333", "localhost:8333", "", "http://", "ftp://127.0.0.1"] {
            let error = checked_endpoint(bad).unwrap_err();
            assert_eq!(error.code(), "EINVAL", "{bad:?}");
            assert!(error.to_string().contains(&format!("endpoint {bad:?}")), "{error}");
            assert!(matches!(error, Error::Invalid { advice: Some(Advice::Endpoint), .. }), "{error:?}");
        }
        assert_eq!(checked_endpoint("http://127.0.0.1:8333/").unwrap(), "http://127.0.0.1:8333");
        assert_eq!(checked_endpoint("https://s3.example.com").unwrap(), "https://s3.example.com");
    }

    #[test]
    fn virtual_hosted_endpoints_carry_the_bucket() {
        assert_eq!(with_bucket_host("http://localhost:9000", "b").unwrap(), "http://b.localhost:9000");
        assert_eq!(with_bucket_host("http://b.localhost:9000", "b").unwrap(), "http://b.localhost:9000");
    }
}
