//! A pushed chunk as stored: its bytes cut into frames (16 KiB by default), each compressed on its
//! own (zstd, with its checksum), one after the other, then a table of the frames in a zstd
//! skippable frame: each frame's compressed length and its sum, the first 8 bytes of the BLAKE3
//! hash of its index and bytes keyed by the chunk's hash (so a frame is checked as a frame of this
//! chunk at this place, not only as some sound frame). The whole object is still one valid zstd stream (`zstd -d` gives the chunk back), and a
//! fault far from any other reads only the frames around its page with one range request instead
//! of the whole chunk, checked against their hashes: bytes fetched on random access stay near the
//! bytes touched, and a frame of other bytes is never served. The manifest repeats each chunk's
//! table (base64), so a reader needs no request for it; the table at the object's end is for a
//! push that finds the chunk stored already and lists it.

use crate::error::{Error, Result};
use base64::Engine as _;
use nix::errno::Errno;
use std::ops::Range;

/// The first bytes of the table's skippable frame (magic 0x184D2A5E, little-endian).
const TABLE_MAGIC: u32 = 0x184D_2A5E;
/// A frame in the table: its compressed length (4 bytes) and its sum (8).
const ENTRY: usize = 12;

/// One frame of a stored chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Its compressed length.
    pub(crate) len: u32,
    /// Its sum (see the top of this file).
    pub(crate) sum: [u8; 8],
}

/// How many frames a chunk of `chunk_len` bytes has.
pub(crate) fn count(chunk_len: u64, frame_size: u64) -> usize {
    chunk_len.div_ceil(frame_size) as usize
}

/// The stored length of the table of `frames` frames, at the object's end.
pub(crate) fn table_len(frames: usize) -> u64 {
    8 + (ENTRY * frames) as u64
}

/// The stored length of a chunk of these frames, with its table.
pub(crate) fn stored_len(frames: &[Frame]) -> u64 {
    frames.iter().map(|f| f.len as u64).sum::<u64>() + table_len(frames.len())
}

/// The sum of frame `index` of the chunk whose hash is `chunk`.
fn sum_of(chunk: &[u8; 32], index: usize, bytes: &[u8]) -> [u8; 8] {
    let hash = blake3::Hasher::new_keyed(chunk).update(&(index as u64).to_le_bytes()).update(bytes).finalize();
    let mut sum = [0; 8];
    sum.copy_from_slice(&hash.as_bytes()[..8]);
    sum
}

/// Compresses `bytes` (whose hash is `chunk`) frame by frame at `level`: the stored object and its frames.
pub(crate) fn encode(
    bytes: &[u8],
    chunk: &[u8; 32],
    frame_size: usize,
    level: i32,
) -> std::io::Result<(Vec<u8>, Vec<Frame>)> {
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    compressor.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
    let mut stored = Vec::with_capacity(bytes.len() / 4);
    let mut frames = Vec::with_capacity(bytes.len().div_ceil(frame_size));
    for (index, frame) in bytes.chunks(frame_size).enumerate() {
        let compressed = compressor.compress(frame)?;
        frames.push(Frame { len: compressed.len() as u32, sum: sum_of(chunk, index, frame) });
        stored.extend_from_slice(&compressed);
    }
    stored.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
    stored.extend_from_slice(&((ENTRY * frames.len()) as u32).to_le_bytes());
    stored.extend_from_slice(&entries(&frames));
    Ok((stored, frames))
}

fn entries(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.len.to_le_bytes().into_iter().chain(f.sum)).collect()
}

fn from_entries(bytes: &[u8]) -> Vec<Frame> {
    bytes
        .chunks_exact(ENTRY)
        .map(|e| Frame {
            len: u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
            sum: [e[4], e[5], e[6], e[7], e[8], e[9], e[10], e[11]],
        })
        .collect()
}

/// The frames as the manifest lists them.
pub(crate) fn to_text(frames: &[Frame]) -> String {
    base64::engine::general_purpose::STANDARD.encode(entries(frames))
}

/// The frames a manifest lists, if the text is a table of whole entries.
pub(crate) fn from_text(text: &str) -> Option<Vec<Frame>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    (bytes.len() % ENTRY == 0).then(|| from_entries(&bytes))
}

/// The frames from a stored chunk's table (its last `table_len(frames)` bytes), if it is one for
/// `frames` frames that make up `stored` bytes with it.
pub(crate) fn parse_table(table: &[u8], frames: usize, stored: u64) -> Option<Vec<Frame>> {
    if table.len() as u64 != table_len(frames) {
        return None;
    }
    let word = |at: usize| u32::from_le_bytes([table[at], table[at + 1], table[at + 2], table[at + 3]]);
    if word(0) != TABLE_MAGIC || word(4) as usize != ENTRY * frames {
        return None;
    }
    let listed = from_entries(&table[8..]);
    (stored_len(&listed) == stored).then_some(listed)
}

/// Which frames hold the chunk's bytes `from..to`, and where they are stored in the object.
pub(crate) fn span(frames: &[Frame], frame_size: u64, from: u64, to: u64) -> (Range<usize>, Range<u64>) {
    let which = (from / frame_size) as usize..(to.div_ceil(frame_size) as usize).min(frames.len());
    let start: u64 = frames[..which.start].iter().map(|f| f.len as u64).sum();
    let len: u64 = frames[which.clone()].iter().map(|f| f.len as u64).sum();
    (which, start..start + len)
}

/// What a range of frames is: of the chunk whose hash is `chunk`, from frame `first`, each of
/// `frame_size` bytes (the last maybe fewer), `len` bytes in all.
pub(crate) struct Span<'a> {
    pub(crate) chunk: [u8; 32],
    pub(crate) first: usize,
    pub(crate) frames: &'a [Frame],
    pub(crate) frame_size: usize,
    pub(crate) len: usize,
}

/// Decompresses stored frames, each matching its sum; or an error (EPROTO) naming `what`.
pub(crate) fn decode(stored: &[u8], span: &Span, what: &str) -> Result<Vec<u8>> {
    let bytes = decompress(stored, span.len, what)?;
    for (at, (frame, bytes)) in span.frames.iter().zip(bytes.chunks(span.frame_size)).enumerate() {
        let index = span.first + at;
        if sum_of(&span.chunk, index, bytes) != frame.sum {
            return Err(corrupt(what, format!("frame {index} is not the chunk's: its sum does not match")));
        }
    }
    Ok(bytes)
}

/// Decompresses stored frames that must give `len` bytes (each frame's checksum is checked).
pub(crate) fn decompress(stored: &[u8], len: usize, what: &str) -> Result<Vec<u8>> {
    let bytes =
        zstd::bulk::decompress(stored, len).map_err(|e| corrupt(what, format!("it does not decompress: {e}")))?;
    if bytes.len() != len {
        return Err(corrupt(what, format!("it holds {} bytes, not {len}", bytes.len())));
    }
    Ok(bytes)
}

pub(crate) fn corrupt(what: &str, why: String) -> Error {
    Error::Remote {
        op: "GET",
        errno: Errno::EPROTO,
        status: None,
        detail: format!("{what} is corrupt ({why}): not served"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| if i % 4096 < 1000 { (i * seed % 251) as u8 } else { 0 }).collect()
    }

    fn range(stored: &[u8], range: Range<u64>) -> &[u8] {
        &stored[range.start as usize..range.end as usize]
    }

    const KEY: [u8; 32] = [9; 32];

    fn span(frames: &[Frame], from: u64, to: u64) -> (Range<u64>, Span<'_>) {
        let (which, at) = super::span(frames, 16384, from, to);
        let len = (which.len() * 16384).min(frames.len() * 16384 - (from as usize / 16384 * 16384));
        (at, Span { chunk: KEY, first: which.start, frames: &frames[which], frame_size: 16384, len })
    }

    #[test]
    fn a_framed_chunk_is_one_zstd_stream_and_its_frames_read_alone() {
        let bytes = sample(65536 + 8192, 7);
        let (stored, frames) = encode(&bytes, &KEY, 16384, 3).unwrap();
        assert_eq!(frames.len(), count(bytes.len() as u64, 16384));
        assert_eq!(stored_len(&frames), stored.len() as u64);
        assert_eq!(zstd::bulk::decompress(&stored, bytes.len()).unwrap(), bytes, "the whole object decompresses");
        let table = &stored[stored.len() - table_len(frames.len()) as usize..];
        assert_eq!(parse_table(table, frames.len(), stored.len() as u64).unwrap(), frames);
        assert!(parse_table(table, frames.len(), stored.len() as u64 + 1).is_none());
        assert_eq!(from_text(&to_text(&frames)).unwrap(), frames);
        // Bytes 20000..40000 are in frames 1 and 2.
        let (at, one_two) = span(&frames, 20000, 40000);
        assert_eq!(one_two.first, 1);
        assert_eq!(decode(range(&stored, at), &one_two, "f").unwrap(), bytes[16384..3 * 16384]);
        // The short last frame.
        let (at, last) = span(&frames, 65536, 65536 + 8192);
        assert_eq!((last.first, last.frames.len()), (4, 1));
        let last = Span { len: 8192, ..last };
        assert_eq!(decode(range(&stored, at), &last, "f").unwrap(), bytes[65536..]);
    }

    #[test]
    fn a_damaged_frame_or_one_of_other_bytes_is_refused() {
        let bytes = sample(32768, 7);
        let (mut stored, frames) = encode(&bytes, &KEY, 16384, 3).unwrap();
        let (at, first) = span(&frames, 0, 16384);
        // Sound frames of other bytes, or of these bytes at another place: they decompress, and do
        // not match the sums.
        let (other, other_frames) = encode(&sample(32768, 11), &KEY, 16384, 3).unwrap();
        let (other_at, _) = span(&other_frames, 0, 16384);
        let err = decode(range(&other, other_at), &first, "c").unwrap_err();
        assert!(err.to_string().contains("frame 0 is not the chunk's"), "{err}");
        let elsewhere = Span { first: 1, frames: first.frames, ..first };
        assert!(decode(range(&stored, at.clone()), &elsewhere, "c").is_err(), "frame 0 read as frame 1");
        // A byte of the compressed data flipped: the frame's checksum (or its decoding) says so.
        stored[at.end as usize - 6] ^= 0x40;
        let err = decode(range(&stored, at), &first, "chunk 0 of u").unwrap_err();
        assert_eq!(err.code(), "EPROTO");
        assert!(err.to_string().contains("chunk 0 of u is corrupt"), "{err}");
    }
}
