//! Small objects kept next to a source's object in its store (`KEY` + a suffix), reached with the
//! source's own client and credentials: a working-set trace stored beside the snapshot it is of,
//! so that the next restore, on any host, finds it.

use super::fetch::retried;
use super::runtime;
use super::store::remote_error;
use super::ObjectSource;
use crate::error::{Error, Result};
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

/// A suffix names an object beside, never a folder or another key: no `/`, not empty.
fn check(suffix: &str) -> Result<()> {
    if suffix.is_empty() || suffix.contains('/') {
        return Err(Error::invalid("objectStore", format!("{suffix:?} is not a suffix for an object beside (no '/')")));
    }
    Ok(())
}

impl ObjectSource {
    /// The URL of the object `KEY{suffix}` beside this one.
    pub fn url_beside(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.url())
    }

    fn path_beside(&self, suffix: &str) -> Path {
        Path::from(format!("{}{suffix}", self.fetcher.path))
    }

    /// The bytes of the object `KEY{suffix}` beside this one, or `None` if there is none (404).
    /// Transient failures are retried within the source's bound. Blocks the calling thread.
    pub fn read_beside(&self, suffix: &str) -> Result<Option<Vec<u8>>> {
        self.beside(suffix, |store, path, url| async move {
            match store.get(&path).await {
                Ok(result) => {
                    result.bytes().await.map(|b| Some(Vec::from(b))).map_err(|e| remote_error("GET", &url, &e))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(remote_error("GET", &url, &e)),
            }
        })
    }

    /// Stores `bytes` as the object `KEY{suffix}` beside this one, replacing any. Transient
    /// failures are retried within the source's bound. Blocks the calling thread.
    pub fn write_beside(&self, suffix: &str, bytes: Vec<u8>) -> Result<()> {
        let payload = PutPayload::from(Bytes::from(bytes));
        self.beside(suffix, |store, path, url| {
            let payload = payload.clone();
            async move { store.put(&path, payload).await.map(|_| ()).map_err(|e| remote_error("PUT", &url, &e)) }
        })
    }

    /// Runs `once` (given the store, the path and the URL of `KEY{suffix}`) on the runtime, retried
    /// as the source's requests are.
    fn beside<T, F, Fut>(&self, suffix: &str, once: F) -> Result<T>
    where
        F: Fn(Arc<dyn ObjectStore>, Path, String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        check(suffix)?;
        let (path, url) = (self.path_beside(suffix), self.url_beside(suffix));
        let store = self.fetcher.store.clone();
        runtime::block_on(retried(self.fetcher.retry, || (), || once(store.clone(), path.clone(), url.clone())))?
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn a_suffix_names_no_folder() {
        assert!(check(".working-set.json").is_ok());
        assert_eq!(check("").unwrap_err().code(), "EINVAL");
        assert_eq!(check("/../other").unwrap_err().code(), "EINVAL");
    }
}
