//! The manifest of a pushed snapshot: one JSON object in the store that says how a memory file was
//! cut into chunks and where each chunk lives. A chunk is named by the BLAKE3 hash of its
//! uncompressed bytes and stored zstd-compressed in frames (`frames.rs`) under `chunks` + hash +
//! `-` + frame size + `.zst` in the same bucket (or on the same host), so snapshots that share
//! pages share chunks; a chunk that is all zeros (or a hole of a sparse file) is recorded as `null`
//! and stored nowhere. Each chunk lists its frames (object, place, length, sum), so a reader can
//! fetch a few frames of it with one range request. A delta (a chunk that differs from the base's
//! chunk at its place in a few frames) names its objects: its own, of those frames (patches, each
//! listed with the base's frame it was made against), then the base's that hold the rest.
//!
//! ```json
//! { "format": "userfaultfd-snapshot", "version": 3, "size": 8589934592, "chunkSize": 4194304,
//!   "hash": "blake3", "compression": "zstd", "chunks": "snapshots/chunks/", "frameSize": 16384,
//!   "list": [{ "hash": "af13…", "stored": 81233, "frames": "AAAAAAA2AQAA…" },
//!            { "hash": "07c2…", "stored": 3170, "frames": "AQAAAAA…", "objects": ["07c2…-16384-9be1….zst", "9be1…-16384.zst"] },
//!            null, …] }
//! ```
//!
//! Version 1 (pushed before frames) is still read: its chunks are one zstd frame each, under
//! hash + `.zst`, and are fetched whole. So is version 2 (frames, deltas of plain frames only).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// What a manifest says it is, first in the object: how a source tells one from a plain object.
pub const FORMAT: &str = "userfaultfd-snapshot";
pub const VERSION: u32 = 3;
/// The `Content-Type` a manifest is stored with.
pub const CONTENT_TYPE: &str = "application/vnd.userfaultfd.snapshot+json";
/// The bytes every manifest begins with (`serde_json` writes the fields in declaration order).
pub const MAGIC: &[u8] = b"{\"format\":\"userfaultfd-snapshot\"";
/// A larger object is never taken for a manifest (about 64 GiB of memory in 16 KiB frames).
pub const MAX_SIZE: u64 = 64 << 20;

/// One chunk that has data: its hash and the bytes it takes in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The BLAKE3 hash of the uncompressed chunk, 64 hex digits.
    pub hash: String,
    /// The compressed chunk's length.
    pub stored: u64,
    /// Its frames (version 2 on): base64 of each frame's object, place, length and sum (`frames.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<String>,
    /// The names (under the chunk prefix) of the objects its frames are in, for a delta; else its
    /// own object only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<String>>,
}

impl Chunk {
    /// Its frames, if it lists them well.
    pub(crate) fn frames(&self) -> Option<Vec<super::frames::Frame>> {
        super::frames::from_text(self.frames.as_deref()?)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The memory file's length in bytes.
    pub size: u64,
    pub chunk_size: u64,
    pub hash: String,
    pub compression: String,
    /// Where the chunks are, a key prefix in the manifest's bucket (or a path on its host).
    pub chunks: String,
    /// Bytes per frame of a chunk (version 2 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_size: Option<u64>,
    /// Chunk by chunk, from offset 0: `None` for a hole (zeros, stored nowhere).
    pub list: Vec<Option<Chunk>>,
}

impl Manifest {
    pub fn new(size: u64, chunk_size: u64, frame_size: u64, chunks: String, list: Vec<Option<Chunk>>) -> Self {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            size,
            chunk_size,
            hash: "blake3".into(),
            compression: "zstd".into(),
            chunks,
            frame_size: Some(frame_size),
            list,
        }
    }

    /// Parses and checks a manifest read from `url`: every field, so a chunk read later can trust
    /// its index, length and hash.
    pub fn parse(url: &str, bytes: &[u8]) -> Result<Manifest> {
        let bad = |why: String| Error::invalid("objectStore", format!("{url} is not a valid snapshot manifest: {why}"));
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(bad(format!("its format is {:?}, not {FORMAT:?}", manifest.format)));
        }
        if !(1..=VERSION).contains(&manifest.version) {
            return Err(bad(format!(
                "version {} (this build reads version {VERSION}): push it again, or use the package that pushed it",
                manifest.version
            )));
        }
        if manifest.hash != "blake3" || manifest.compression != "zstd" {
            return Err(bad(format!(
                "hash {:?} and compression {:?} (blake3, zstd)",
                manifest.hash, manifest.compression
            )));
        }
        let page = crate::region::base_page_size() as u64;
        if manifest.chunk_size == 0 || manifest.chunk_size % page != 0 {
            return Err(bad(format!("chunk size {} is not a multiple of the page size", manifest.chunk_size)));
        }
        let expected = manifest.size.div_ceil(manifest.chunk_size);
        if manifest.list.len() as u64 != expected {
            return Err(bad(format!(
                "{} chunks listed, {expected} for {} bytes in chunks of {}",
                manifest.list.len(),
                manifest.size,
                manifest.chunk_size
            )));
        }
        match (manifest.version, manifest.frame_size) {
            (1, None) => {}
            (1, Some(_)) => return Err(bad("version 1 has no frame size".into())),
            (_, Some(frame)) if frame != 0 && frame % page == 0 && manifest.chunk_size % frame == 0 => {}
            (_, frame) => {
                return Err(bad(format!(
                    "frame size {frame:?} does not divide chunk size {} in whole pages",
                    manifest.chunk_size
                )))
            }
        }
        if manifest.chunks.split('/').any(|part| part == ".." || part == ".") || manifest.chunks.starts_with('/') {
            return Err(bad(format!("chunk prefix {:?} is not a plain key prefix", manifest.chunks)));
        }
        for (index, chunk) in manifest.list.iter().enumerate() {
            if let Some(chunk) = chunk {
                if chunk.hash.len() != 64
                    || !chunk.hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                {
                    return Err(bad(format!("chunk {index}'s hash {:?} is not 64 lowercase hex digits", chunk.hash)));
                }
                if chunk.stored == 0 {
                    return Err(bad(format!("chunk {index} is stored in 0 bytes")));
                }
                if let Some(frame) = manifest.frame_size {
                    let expected = super::frames::count(manifest.chunk_len(index as u64), frame);
                    let patches = manifest.version >= 3;
                    if !chunk.frames().is_some_and(|frames| frames_fit(chunk, &frames, expected, patches)) {
                        return Err(bad(format!(
                            "chunk {index} does not list {expected} frames that fit its objects and its {} stored bytes",
                            chunk.stored
                        )));
                    }
                    if let Some(name) = chunk.objects.iter().flatten().find(|name| !plain_name(name)) {
                        return Err(bad(format!("chunk {index} names the object {name:?}, not a plain name")));
                    }
                } else if chunk.frames.is_some() {
                    return Err(bad(format!("chunk {index} lists frames in a version 1 manifest")));
                }
            }
        }
        Ok(manifest)
    }

    /// The manifest as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The key of the chunk of `hash`, stored whole.
    pub fn chunk_key(&self, hash: &str) -> String {
        chunk_key(&self.chunks, hash, self.frame_size)
    }

    /// The key of `chunk`'s object `object` (0: its own).
    pub(crate) fn object_key(&self, chunk: &Chunk, object: u8) -> String {
        match &chunk.objects {
            Some(names) => format!("{}{}", self.chunks, names.get(object as usize).map_or("", String::as_str)),
            None => self.chunk_key(&chunk.hash),
        }
    }

    /// The bytes chunk `index` holds uncompressed.
    pub fn chunk_len(&self, index: u64) -> u64 {
        (self.size - index * self.chunk_size).min(self.chunk_size)
    }
}

/// A chunk's frames fit its objects: as many as its size asks; for a chunk stored whole, one after
/// the other in its own object, with the table after them, none a patch; for a delta, each in one
/// of its objects, its own within its stored bytes, a patch (version 3 on) made against a frame of
/// another object than its own or this chunk's (a patch of the base's delta may be taken over).
fn frames_fit(chunk: &Chunk, frames: &[super::frames::Frame], expected: usize, patches: bool) -> bool {
    if frames.len() != expected {
        return false;
    }
    let Some(names) = &chunk.objects else {
        let mut at = 0u64;
        for frame in frames {
            if frame.object != 0 || frame.offset as u64 != at || frame.patch_of.is_some() {
                return false;
            }
            at += frame.len as u64;
        }
        return at + super::frames::table_len(expected) == chunk.stored;
    };
    frames.iter().all(|f| {
        let placed =
            (f.object as usize) < names.len() && (f.object != 0 || f.offset as u64 + f.len as u64 <= chunk.stored);
        let patch = match f.patch_of {
            None => true,
            Some(reference) => {
                patches
                    && reference.object != 0
                    && reference.object != f.object
                    && (reference.object as usize) < names.len()
            }
        };
        placed && patch
    })
}

/// An object's name under the chunk prefix: no folder, nothing but hex digits, `-` and `.zst`.
fn plain_name(name: &str) -> bool {
    name.strip_suffix(".zst")
        .is_some_and(|stem| !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
}

/// The name of a delta's own object: the chunk's hash and frame size, and the base chunk's hash
/// it was taken against (the same bytes against another base are another object).
pub fn delta_name(hash: &str, frame_size: u64, base: &str) -> String {
    format!("{hash}-{frame_size}-{}.zst", &base[..16.min(base.len())])
}

/// Where a chunk is stored: framed chunks are named by their frame size too, since the same bytes
/// in other frames are another object.
pub fn chunk_key(prefix: &str, hash: &str, frame_size: Option<u64>) -> String {
    match frame_size {
        Some(frame) => format!("{prefix}{hash}-{frame}.zst"),
        None => format!("{prefix}{hash}.zst"),
    }
}

/// The BLAKE3 hash of `bytes`, in hex.
pub fn hash_of(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_starts_with_its_magic() {
        let (object, listed) = super::super::frames::encode(&[1; 8192], 4096, 3, None).unwrap();
        let frames: Vec<_> = listed.into_iter().map(|(_, f)| f).collect();
        let text = super::super::frames::to_text(&frames);
        let own = Chunk { hash: hash_of(b"x"), stored: object.len() as u64, frames: Some(text.clone()), objects: None };
        let list = vec![Some(own.clone()), None];
        let manifest = Manifest::new(8192 + 10, 8192, 4096, "c/".into(), list);
        let bytes = manifest.to_bytes();
        assert!(bytes.starts_with(MAGIC), "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(Manifest::parse("u", &bytes).unwrap(), manifest);
        assert_eq!(manifest.chunk_len(1), 10);
        assert_eq!(manifest.chunk_key("ab"), "c/ab-4096.zst");
        assert_eq!(manifest.object_key(&own, 0), "c/".to_string() + &hash_of(b"x") + "-4096.zst");
        let names = Some(vec!["ab-4096-cd.zst".into(), "cd-4096.zst".into()]);
        let delta = Chunk { objects: names, ..own.clone() };
        assert_eq!(manifest.object_key(&delta, 1), "c/cd-4096.zst");
        let bad_name = Chunk { objects: Some(vec!["../x.zst".into()]), ..own };
        let refused = Manifest { list: vec![Some(bad_name), None], ..manifest.clone() };
        assert!(Manifest::parse("u", &refused.to_bytes()).unwrap_err().to_string().contains("not a plain name"));
        let v1 = Manifest { version: 1, frame_size: None, list: vec![None, None], ..manifest };
        assert_eq!(Manifest::parse("u", &v1.to_bytes()).unwrap(), v1, "version 1 is still read");
        assert_eq!(v1.chunk_key("ab"), "c/ab.zst");
    }

    #[test]
    fn a_delta_lists_its_patches_with_the_frames_they_were_made_against() {
        use super::super::frames::{to_text, Frame, Place};
        let sum = [7; 8];
        let plain = Frame { object: 1, offset: 0, len: 50, sum, patch_of: None };
        let patch =
            Frame { object: 0, offset: 0, len: 20, sum, patch_of: Some(Place { object: 1, offset: 50, len: 60 }) };
        let chunk = |frames: &[Frame]| Chunk {
            hash: hash_of(b"x"),
            stored: 20,
            frames: Some(to_text(frames)),
            objects: Some(vec!["ab-4096-cd.zst".into(), "cd-4096.zst".into()]),
        };
        let delta = Manifest::new(8192, 8192, 4096, "c/".into(), vec![Some(chunk(&[plain, patch]))]);
        let read = Manifest::parse("u", &delta.to_bytes()).unwrap();
        assert_eq!(read.list[0].as_ref().unwrap().frames().unwrap(), [plain, patch]);
        let refused = |m: &Manifest| Manifest::parse("u", &m.to_bytes()).unwrap_err().to_string();
        assert!(
            refused(&Manifest { version: 2, ..delta.clone() }).contains("does not list 2 frames"),
            "no patches in version 2"
        );
        let v2 = Manifest { version: 2, list: vec![Some(chunk(&[plain, plain]))], ..delta.clone() };
        assert_eq!(Manifest::parse("u", &v2.to_bytes()).unwrap(), v2, "version 2 (no patches) is still read");
        let against_its_own = Frame { patch_of: Some(Place { object: 0, offset: 0, len: 5 }), ..patch };
        let own = Manifest { list: vec![Some(chunk(&[plain, against_its_own]))], ..delta.clone() };
        assert!(refused(&own).contains("does not list 2 frames"), "a patch made against its own object");
        let whole =
            Chunk { objects: None, ..chunk(&[Frame { object: 0, ..patch }, Frame { object: 0, offset: 20, ..patch }]) };
        assert!(
            refused(&Manifest { list: vec![Some(whole)], ..delta }).contains("does not list 2 frames"),
            "a patch in a whole chunk"
        );
    }

    #[test]
    fn a_bad_manifest_is_refused_with_what_is_wrong() {
        let good = Manifest::new(8192, 4096, 4096, "c/".into(), vec![None, None]);
        let refused = |m: &Manifest| Manifest::parse("s3://b/k", &m.to_bytes()).unwrap_err().to_string();
        assert!(refused(&Manifest { version: 4, ..good.clone() }).contains("version 4"));
        assert!(refused(&Manifest { frame_size: Some(3000), ..good.clone() }).contains("frame size"));
        let unframed = Manifest {
            list: vec![Some(Chunk { hash: hash_of(b"x"), stored: 9, frames: None, objects: None }), None],
            ..good.clone()
        };
        assert!(refused(&unframed).contains("does not list 1 frames"));
        assert!(refused(&Manifest { chunk_size: 100, ..good.clone() }).contains("chunk size 100"));
        assert!(refused(&Manifest { list: vec![None], ..good.clone() }).contains("1 chunks listed, 2"));
        assert!(refused(&Manifest { chunks: "../x/".into(), ..good.clone() }).contains("not a plain key prefix"));
        let bad_hash = Manifest {
            list: vec![Some(Chunk { hash: "zz".into(), stored: 1, frames: None, objects: None }), None],
            ..good.clone()
        };
        assert!(refused(&bad_hash).contains("chunk 0's hash"));
        assert!(Manifest::parse("u", b"{}").unwrap_err().to_string().contains("not a valid snapshot manifest"));
    }
}
