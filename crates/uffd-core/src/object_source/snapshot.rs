//! A pushed snapshot's chunks: read whole (decompressed and checked against their hash) or a few
//! frames at a time, its holes as zeros with no request, a chunk found corrupt remembered (named
//! by its content, it would come back the same).

use super::disk::Slot;
use super::manifest;
use super::{frames, ObjectSource, OP};
use crate::error::{Error, Result};
use bytes::Bytes;
use nix::errno::Errno;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A pushed snapshot's chunk as stored: decompressed to `len` bytes whose hash is `hash`, or an
/// error (EPROTO) that names it: a damaged chunk is never served.
fn decode(stored: &[u8], len: usize, hash: &str, what: &str) -> Result<Bytes> {
    let bytes = frames::decompress(stored, len, what)?;
    let got = manifest::hash_of(&bytes);
    if got != hash {
        return Err(frames::corrupt(what, format!("its bytes hash to {got}, not {hash}")));
    }
    Ok(Bytes::from(bytes))
}

impl ObjectSource {
    /// The bytes `from..to` of a pushed snapshot's chunk `index` (framed, with data): the frames
    /// that hold them, one range request per run of them in one object (all at once), each frame
    /// decompressed and checked against its sum.
    pub(super) async fn get_frames(self: &Arc<Self>, index: u64, from: u64, to: u64) -> Result<Bytes> {
        let snapshot = self.snapshot.as_ref().ok_or_else(|| Error::invalid(OP, "frames of a plain object"))?;
        let (Some(frame_size), Some(chunk)) = (snapshot.manifest.frame_size, &snapshot.manifest.list[index as usize])
        else {
            return Err(Error::invalid(OP, format!("chunk {index} of {} has no frames to read", self.url())));
        };
        self.known_corrupt(index)?;
        let listed = Arc::new(chunk.frames().unwrap_or_default());
        let chunk_len = snapshot.manifest.chunk_len(index) as usize;
        let which = frames::covering(frame_size, listed.len(), from, to);
        let first = which.start as u64 * frame_size;
        // Each run of frames, and of the plain frames patches among them were made against: all
        // requested at once.
        let fetch = |run: frames::Run, kind: &'static str| {
            let key = snapshot.manifest.object_key(chunk, run.object);
            let what = format!(
                "{kind} {}-{} of chunk {index} of {} ({})",
                run.frames.start,
                run.frames.end - 1,
                self.url(),
                snapshot.location.url_of(&key)
            );
            async move {
                let path = snapshot.location.path_of(&key)?;
                let len = run.stored.end - run.stored.start;
                let stored = self.fetcher.get_object(&path, Some(run.stored.clone()), len, &what, &self.breaker).await;
                Ok::<_, Error>((run, self.found_corrupt(index, self.watch(stored))?, what))
            }
        };
        let runs = frames::runs(&listed, which.clone()).into_iter().map(|run| fetch(run, "frames"));
        let references =
            frames::reference_runs(&listed, which).into_iter().map(|run| fetch(run, "references of frames"));
        let (runs, references) =
            futures::future::try_join(futures::future::try_join_all(runs), futures::future::try_join_all(references))
                .await?;
        let frame = frame_size as usize;
        let decoded = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let mut plain = Vec::new();
            for (run, stored, what) in &references {
                plain.extend(frames::decode_plain(stored, run, |i| listed[i].patch_of, frame, what)?);
            }
            let mut bytes = Vec::new();
            for (run, stored, what) in &runs {
                bytes.extend(frames::decode_run(stored, run, &listed, frame, chunk_len, &plain, what)?);
            }
            Ok(bytes)
        })
        .await
        .map_err(|e| Error::invalid(OP, format!("a decompression task failed: {e}")))?;
        if decoded.is_err() {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        let bytes = Bytes::from(self.found_corrupt(index, decoded)?);
        let len = bytes.len();
        Ok(bytes.slice(((from - first) as usize).min(len)..((to - first) as usize).min(len)))
    }

    /// Chunk `index` from the store: a range of the object, or a pushed snapshot's chunk (a hole
    /// without a request), decompressed and checked against its hash.
    pub(super) async fn get_chunk(self: &Arc<Self>, index: u64) -> Result<Bytes> {
        let Some(snapshot) = &self.snapshot else {
            return self.fetch(self.chunk_range(index)).await;
        };
        let len = snapshot.manifest.chunk_len(index) as usize;
        let Some(chunk) = &snapshot.manifest.list[index as usize] else {
            return Ok(snapshot.zeros.slice(..len));
        };
        self.known_corrupt(index)?;
        if chunk.objects.is_some() {
            // A delta: its frames from its objects, and the whole checked against its hash.
            let bytes = self.get_frames(index, 0, len as u64).await?;
            let got = manifest::hash_of(&bytes);
            let what = snapshot.describe(self.url(), index, chunk);
            let checked = if got == chunk.hash {
                Ok(bytes)
            } else {
                Err(frames::corrupt(&what, format!("its bytes hash to {got}, not {}", chunk.hash)))
            };
            return self.found_corrupt(index, checked);
        }
        let what = snapshot.describe(self.url(), index, chunk);
        let path = snapshot.location.path_of(&snapshot.manifest.chunk_key(&chunk.hash))?;
        let stored = self.fetcher.get_object(&path, None, chunk.stored, &what, &self.breaker).await;
        let decoded = match self.watch(stored) {
            Ok(stored) => {
                let hash = chunk.hash.clone();
                let decoded = tokio::task::spawn_blocking(move || decode(&stored, len, &hash, &what))
                    .await
                    .map_err(|e| Error::invalid(OP, format!("a decompression task failed: {e}")))?;
                if decoded.is_err() {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                }
                self.found_corrupt(index, decoded)
            }
            Err(err) => self.found_corrupt(index, Err(err)),
        };
        decoded
    }

    /// The error chunk `index` was found corrupt with, if it was: a chunk is named by its content,
    /// so fetching it again brings the same bytes.
    pub(super) fn known_corrupt(&self, index: u64) -> Result<()> {
        match self.corrupt.lock().unwrap_or_else(|p| p.into_inner()).get(&index) {
            Some(err) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                Err(err.clone())
            }
            None => Ok(()),
        }
    }

    /// Remembers chunk `index` as corrupt if what was read of it (whole or frames) was: stored bytes
    /// of the wrong length, or that do not decompress to it. A missing chunk is not remembered: a
    /// push may store it meanwhile.
    pub(super) fn found_corrupt<T>(&self, index: u64, read: Result<T>) -> Result<T> {
        if let Err(err) = &read {
            if matches!(err, Error::Remote { errno: Errno::EPROTO, .. }) {
                self.corrupt.lock().unwrap_or_else(|p| p.into_inner()).insert(index, err.clone());
            }
        }
        read
    }

    /// Whether chunk `index` is a pushed snapshot's hole (zeros, stored nowhere).
    pub(crate) fn is_hole(&self, index: u64) -> bool {
        self.hole(index).is_some()
    }

    /// A pushed snapshot's hole: zeros, with no request.
    pub(super) fn hole(&self, index: u64) -> Option<Bytes> {
        let snapshot = self.snapshot.as_ref()?;
        match snapshot.manifest.list.get(index as usize)? {
            None => Some(snapshot.zeros.slice(..snapshot.manifest.chunk_len(index) as usize)),
            Some(_) => None,
        }
    }

    /// Where chunk `index` lives in the disk cache, and whether `bytes` read there are it.
    pub(super) fn slot(&self, index: u64) -> Slot {
        match self.snapshot.as_ref().and_then(|s| s.manifest.list[index as usize].as_ref()) {
            Some(chunk) => Slot::content(&chunk.hash),
            None => Slot::index(index),
        }
    }

    pub(super) fn intact(&self, index: u64, bytes: &Bytes) -> bool {
        match self.snapshot.as_ref().and_then(|s| s.manifest.list[index as usize].as_ref()) {
            Some(chunk) => manifest::hash_of(bytes) == chunk.hash,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_served_only_if_it_decompresses_to_its_hash() {
        let bytes = vec![7u8; 8192];
        let hash = manifest::hash_of(&bytes);
        let stored = zstd::bulk::compress(&bytes, 3).unwrap();
        assert_eq!(&decode(&stored, 8192, &hash, "chunk 0 of u").unwrap()[..], &bytes[..]);
        let other = manifest::hash_of(b"other");
        let err = decode(&stored, 8192, &other, "chunk 0 of u").unwrap_err();
        assert_eq!(err.code(), "EPROTO");
        assert!(
            err.to_string().contains(&format!("chunk 0 of u is corrupt (its bytes hash to {hash}, not {other})")),
            "{err}"
        );
        assert!(decode(&stored, 4096, &hash, "c").unwrap_err().to_string().contains("does not decompress"));
        assert!(decode(&stored, 16384, &hash, "c").unwrap_err().to_string().contains("holds 8192 bytes, not 16384"));
        assert!(decode(&[1, 2, 3], 8192, &hash, "c").unwrap_err().to_string().contains("does not decompress"));
        assert!(!super::super::store::transient(&err), "a corrupt chunk is not tried again");
    }
}
