//! Options from JavaScript made into the core's. The TypeScript in front applies every default
//! (lib/options.ts) and sends complete values; an absent value here means "none" only where the
//! core has a meaning for none (no timeout, find the permitted mode), and is refused elsewhere.

use crate::args::{given, to_opt_usize, to_usize};
use crate::errors::invalid;
use napi::{Env, Result};
use napi_derive::napi;
use std::sync::Arc;
use std::time::Duration;
use uffd_core::dirty::DirtyMethod;
use uffd_core::object_source::{
    AzureAccount, CredentialSource, Credentials, ObjectOptions, Pushed, RetryPolicy, StoreOptions, DEFAULT_CHUNK_SIZE,
    DEFAULT_CONCURRENCY,
};
use uffd_core::residency::Limit;
use uffd_core::source::{Readahead, Recorder, ServeOptions};
use uffd_core::{Fallback, Modes, Options};

#[napi(object)]
pub struct BindingOptions {
    pub features: Option<Vec<String>>,
    pub user_mode_only: Option<bool>,
    pub fallback: Option<String>,
    pub timeout_ms: Option<f64>,
    pub spin_micros: Option<f64>,
    pub readers: Option<f64>,
}

/// The core's options of a userfaultfd opened or adopted. An absent `userModeOnly` asks the core
/// to find what is permitted; an absent `timeoutMs` is no limit.
pub(crate) fn core_options(env: &Env, options: BindingOptions) -> Result<Options> {
    let features = given(env, "options.features", options.features)?;
    let fallback = match given(env, "options.fallback", options.fallback)?.as_str() {
        "zero" => Fallback::Zero,
        "sigbus" => Fallback::Sigbus,
        other => {
            return Err(invalid(env, "Userfaultfd", format!("fallback must be 'zero' or 'sigbus', got {other:?}")));
        }
    };
    let timeout = to_opt_usize(env, "timeoutMs", options.timeout_ms)?.map(|ms| Duration::from_millis(ms as u64));
    let spin = to_usize(env, "spinMicros", given(env, "options.spinMicros", options.spin_micros)?)?;
    Ok(Options {
        features,
        user_mode_only: options.user_mode_only,
        fallback,
        timeout,
        spin: Duration::from_micros(spin as u64),
        readers: to_usize(env, "readers", given(env, "options.readers", options.readers)?)?,
    })
}

/// What to register: the fault modes and the range in the region.
#[napi(object, object_to_js = false)]
pub struct BindingRegistration {
    pub missing: bool,
    pub minor: bool,
    pub wp: bool,
    pub offset: f64,
    pub length: Option<f64>,
    pub readahead_pages: Option<f64>,
    pub readahead_max_pages: Option<f64>,
    pub adaptive: Option<bool>,
    pub fallthrough: bool,
    /// Bytes of the range resident at most, and the water marks (fractions of it).
    pub max_resident: Option<f64>,
    pub resident_high: Option<f64>,
    pub resident_low: Option<f64>,
}

/// A registration: its modes, its range, and how a source serves it (read only when there is a
/// source or a residency limit: the rest needs none).
pub(crate) struct Registration {
    pub modes: Modes,
    pub offset: usize,
    pub length: Option<usize>,
    pub serve: Option<ServeOptions>,
}

pub(crate) fn registration(env: &Env, range: BindingRegistration, with_source: bool) -> Result<Registration> {
    let offset = to_usize(env, "offset", range.offset)?;
    let length = to_opt_usize(env, "length", range.length)?;
    let modes = Modes { missing: range.missing, minor: range.minor, wp: range.wp };
    let serve = if with_source || range.max_resident.is_some() {
        let readahead = readahead(env, range.readahead_pages, range.readahead_max_pages, range.adaptive)?;
        let residency = match range.max_resident {
            Some(bytes) => Some(Limit {
                bytes: to_usize(env, "maxResident", bytes)?,
                high: given(env, "maxResident.high", range.resident_high)?,
                low: given(env, "maxResident.low", range.resident_low)?,
            }),
            None => None,
        };
        Some(ServeOptions { readahead, fallthrough: range.fallthrough, zero_removed: false, recorder: None, residency })
    } else {
        None
    };
    Ok(Registration { modes, offset, length, serve })
}

/// How an already-registered range is served from a source (`serve`).
#[napi(object, object_to_js = false)]
pub struct BindingServe {
    pub offset: f64,
    pub length: Option<f64>,
    pub readahead_pages: Option<f64>,
    pub readahead_max_pages: Option<f64>,
    pub adaptive: Option<bool>,
    pub fallthrough: bool,
    pub zero_removed: bool,
    /// Where the range's first byte is in the source, past the source's own offset.
    pub source_offset: f64,
}

/// A served range of another process's memory: where, and how its source serves it.
pub(crate) struct Serving {
    pub offset: usize,
    pub length: Option<usize>,
    pub source_offset: u64,
    pub serve: ServeOptions,
}

pub(crate) fn serving(env: &Env, how: BindingServe, recorder: Option<Arc<Recorder>>) -> Result<Serving> {
    let offset = to_usize(env, "offset", how.offset)?;
    let length = to_opt_usize(env, "length", how.length)?;
    let readahead = readahead(env, how.readahead_pages, how.readahead_max_pages, how.adaptive)?;
    let serve = ServeOptions {
        readahead,
        fallthrough: how.fallthrough,
        zero_removed: how.zero_removed,
        recorder,
        residency: None,
    };
    let source_offset = to_usize(env, "sourceOffset", how.source_offset)? as u64;
    Ok(Serving { offset, length, source_offset, serve })
}

fn readahead(env: &Env, pages: Option<f64>, max_pages: Option<f64>, adaptive: Option<bool>) -> Result<Readahead> {
    let pages = to_usize(env, "readahead.pages", given(env, "readahead.pages", pages)?)?;
    let max_pages = to_usize(env, "readahead.maxPages", given(env, "readahead.maxPages", max_pages)?)?;
    let adaptive = given(env, "readahead.adaptive", adaptive)?;
    Ok(Readahead { pages, adaptive, max_pages })
}

/// Where pages move from, for `move`.
#[napi(object, object_to_js = false)]
pub struct BindingMove {
    pub from_offset: f64,
    pub length: f64,
    pub wake: bool,
    pub allow_source_holes: bool,
}

/// Where pages move from, for a fault's `move`.
#[napi(object, object_to_js = false)]
pub struct BindingFaultMove {
    pub from_offset: f64,
    pub length: Option<f64>,
    pub wake: bool,
    pub allow_source_holes: bool,
}

/// A range of a region: offset and length in bytes.
#[napi(object)]
pub struct BindingRange {
    pub offset: f64,
    pub length: f64,
}

/// A prefetch's ranges as (offset, length) pairs, and its pages per ioctl.
pub(crate) fn prefetch(
    env: &Env,
    ranges: &[BindingRange],
    chunk_pages: Option<f64>,
) -> Result<(Vec<(usize, usize)>, usize)> {
    let ranges = ranges
        .iter()
        .map(|r| Ok((to_usize(env, "offset", r.offset)?, to_usize(env, "length", r.length)?)))
        .collect::<Result<Vec<_>>>()?;
    let chunk_pages = to_usize(env, "chunkPages", given(env, "chunkPages", chunk_pages)?)?;
    Ok((ranges, chunk_pages))
}

/// How `dirtyPages` finds the pages written.
pub(crate) fn dirty_method(env: &Env, method: &str) -> Result<DirtyMethod> {
    match method {
        "auto" => Ok(DirtyMethod::Auto),
        "scan" => Ok(DirtyMethod::Scan),
        "pagemap" => Ok(DirtyMethod::Pagemap),
        other => Err(invalid(env, "argument", format!("method must be 'auto', 'scan' or 'pagemap', got {other:?}"))),
    }
}

/// Every option of an object source, defaults applied (lib/source.ts).
#[napi(object)]
pub struct BindingObjectOptions {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// A web identity: the token's file and the role (with the session name and STS endpoint).
    pub web_identity_token_file: Option<String>,
    pub role_arn: Option<String>,
    pub role_session_name: Option<String>,
    pub sts_endpoint: Option<String>,
    /// A container credentials endpoint, and its authorization token (or the file holding it).
    pub container_credentials_uri: Option<String>,
    pub container_authorization_token: Option<String>,
    pub container_authorization_token_file: Option<String>,
    /// The instance metadata service, when asked for.
    pub instance_metadata_endpoint: Option<String>,
    pub anonymous: bool,
    pub virtual_hosted_style: bool,
    /// For `az://`: the storage account, and its shared key or SAS token.
    pub account: Option<String>,
    pub account_key: Option<String>,
    pub sas_token: Option<String>,
    pub chunk_size: Option<f64>,
    pub concurrency: Option<f64>,
    pub readahead_chunks: Option<f64>,
    pub adaptive: Option<bool>,
    pub memory_cache: Option<f64>,
    pub cache_dir: Option<String>,
    pub retries: Option<f64>,
    pub retry_delay_ms: Option<f64>,
    pub retry_max_delay_ms: Option<f64>,
    pub retry_timeout_ms: Option<f64>,
    pub connect_timeout_ms: Option<f64>,
    pub request_timeout_ms: Option<f64>,
    pub refetch_after_outage: Option<bool>,
}

/// The core's options of an object source. An absent number or flag is the core's default; an
/// absent endpoint, region or cache directory is none (the URL says where, no disk cache); credentials are used only when both keys are given, else
/// from the one source named (`pushed`: set by a provider function).
pub(crate) fn object_options(
    env: &Env,
    options: BindingObjectOptions,
    pushed: Option<Arc<Pushed>>,
) -> Result<ObjectOptions> {
    // What is not given is the core's default (ObjectOptions::sized, RetryPolicy, StoreOptions).
    let or = |what: &str, value: Option<f64>, default: usize| value.map_or(Ok(default), |v| to_usize(env, what, v));
    let ms = |what: &str, value: Option<f64>, default: Duration| {
        value.map_or(Ok(default), |v| to_usize(env, what, v).map(|v| Duration::from_millis(v as u64)))
    };
    let chunk_size = or("chunkSize", options.chunk_size, DEFAULT_CHUNK_SIZE)?;
    let concurrency = or("concurrency", options.concurrency, DEFAULT_CONCURRENCY)?;
    let defaults = ObjectOptions::sized(chunk_size, concurrency);
    let (retry, store) = (defaults.retry, defaults.store);
    let credentials = match (options.access_key_id, options.secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Some(Credentials { access_key_id, secret_access_key, session_token: options.session_token })
        }
        _ => None,
    };
    let credential_source = match (pushed, options.web_identity_token_file, options.role_arn) {
        (Some(pushed), _, _) => Some(CredentialSource::Pushed(pushed)),
        (None, Some(token_file), Some(role_arn)) => Some(CredentialSource::WebIdentity {
            token_file,
            role_arn,
            session_name: options.role_session_name,
            sts_endpoint: options.sts_endpoint,
        }),
        _ => match (options.container_credentials_uri, options.instance_metadata_endpoint) {
            (Some(uri), _) => Some(CredentialSource::Container {
                uri,
                token: options.container_authorization_token,
                token_file: options.container_authorization_token_file,
            }),
            (None, Some(endpoint)) => Some(CredentialSource::InstanceMetadata { endpoint }),
            (None, None) => None,
        },
    };
    Ok(ObjectOptions {
        store: StoreOptions {
            endpoint: options.endpoint,
            region: options.region,
            credentials,
            credential_source,
            anonymous: options.anonymous,
            virtual_hosted_style: options.virtual_hosted_style,
            azure: options.account.map(|name| AzureAccount { name, key: options.account_key, sas: options.sas_token }),
            connect_timeout: ms("connectTimeoutMs", options.connect_timeout_ms, store.connect_timeout)?,
            request_timeout: ms("requestTimeoutMs", options.request_timeout_ms, store.request_timeout)?,
        },
        chunk_size,
        concurrency,
        readahead_chunks: or("readaheadChunks", options.readahead_chunks, defaults.readahead_chunks)?,
        adaptive: options.adaptive.unwrap_or(defaults.adaptive),
        memory_cache: or("memoryCache", options.memory_cache, defaults.memory_cache)?,
        cache_dir: options.cache_dir.map(Into::into),
        retry: RetryPolicy {
            retries: or("retry.retries", options.retries, retry.retries as usize)? as u32,
            initial_delay: ms("retry.delayMs", options.retry_delay_ms, retry.initial_delay)?,
            max_delay: ms("retry.maxDelayMs", options.retry_max_delay_ms, retry.max_delay)?,
            timeout: ms("retry.timeoutMs", options.retry_timeout_ms, retry.timeout)?,
        },
        refetch_after_outage: options.refetch_after_outage.unwrap_or(defaults.refetch_after_outage),
    })
}
