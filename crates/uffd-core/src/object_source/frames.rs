//! A pushed chunk as stored: its bytes cut into frames (16 KiB by default), each compressed on its
//! own (zstd, with its checksum). A chunk lists, frame by frame, which stored object holds the
//! frame, where, its compressed length and its sum (the first 8 bytes of the BLAKE3 hash of its
//! index and bytes). Most chunks are one object of their own: their frames one after the other,
//! then a table of the frames (lengths and sums) in a zstd skippable frame, so the object is still
//! one valid zstd stream (`zstd -d` gives the chunk back), and a push that finds it stored already
//! can list it. A chunk that differs from the base snapshot's chunk at its place in a few frames
//! is a delta: an object of those frames only, and the base's objects for the rest.
//!
//! A fault far from any other reads only the frames around its page (one range request per
//! object run), checked against their sums: bytes fetched on random access stay near the bytes
//! touched, and a frame of other bytes is never served. The manifest lists each chunk's frames
//! (base64), so a reader needs no request for them.

use crate::error::{Error, Result};
use base64::Engine as _;
use nix::errno::Errno;
use std::ops::Range;

/// The first bytes of the table's skippable frame (magic 0x184D2A5E, little-endian).
const TABLE_MAGIC: u32 = 0x184D_2A5E;
/// A frame in an object's table: its compressed length (4 bytes) and its sum (8).
const TABLE_ENTRY: usize = 12;
/// A frame in the manifest: its object (1 byte), offset there (4), length (4) and sum (8).
const ENTRY: usize = 17;

pub(crate) type Sum = [u8; 8];

/// One frame of a chunk: where it is stored, and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Which of the chunk's objects holds it (0: the chunk's own).
    pub(crate) object: u8,
    /// Where its compressed bytes start in that object, and how many there are.
    pub(crate) offset: u32,
    pub(crate) len: u32,
    pub(crate) sum: Sum,
}

impl Frame {
    fn stored(&self) -> Range<u64> {
        self.offset as u64..self.offset as u64 + self.len as u64
    }
}

/// How many frames a chunk of `chunk_len` bytes has.
pub(crate) fn count(chunk_len: u64, frame_size: u64) -> usize {
    chunk_len.div_ceil(frame_size) as usize
}

/// The stored length of the table of `frames` frames, at the end of a chunk's own object.
pub(crate) fn table_len(frames: usize) -> u64 {
    8 + (TABLE_ENTRY * frames) as u64
}

/// The sum of frame `index` of a chunk.
pub(crate) fn sum_of(index: usize, bytes: &[u8]) -> Sum {
    let hash = blake3::Hasher::new().update(&(index as u64).to_le_bytes()).update(bytes).finalize();
    let mut sum = [0; 8];
    sum.copy_from_slice(&hash.as_bytes()[..8]);
    sum
}

/// The sums of a chunk's frames.
pub(crate) fn sums(bytes: &[u8], frame_size: usize) -> Vec<Sum> {
    bytes.chunks(frame_size).enumerate().map(|(index, frame)| sum_of(index, frame)).collect()
}

/// A frame compressed into an object: its index in the chunk, and where it is.
pub(crate) type Kept = (usize, Frame);

/// Compresses the frames of `bytes` that `keep` names (all of them: `None`) at `level` into one
/// object: the object (with the table of every frame when all are kept) and those frames, as
/// object 0.
pub(crate) fn encode(
    bytes: &[u8],
    frame_size: usize,
    level: i32,
    keep: Option<&[bool]>,
) -> std::io::Result<(Vec<u8>, Vec<Kept>)> {
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    compressor.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
    let mut stored = Vec::with_capacity(bytes.len() / 4);
    let mut frames = Vec::with_capacity(bytes.len().div_ceil(frame_size));
    for (index, frame) in bytes.chunks(frame_size).enumerate() {
        if keep.is_some_and(|keep| !keep[index]) {
            continue;
        }
        let compressed = compressor.compress(frame)?;
        let entry =
            Frame { object: 0, offset: stored.len() as u32, len: compressed.len() as u32, sum: sum_of(index, frame) };
        frames.push((index, entry));
        stored.extend_from_slice(&compressed);
    }
    if keep.is_none() {
        stored.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
        stored.extend_from_slice(&((TABLE_ENTRY * frames.len()) as u32).to_le_bytes());
        for (_, frame) in &frames {
            stored.extend_from_slice(&frame.len.to_le_bytes());
            stored.extend_from_slice(&frame.sum);
        }
    }
    Ok((stored, frames))
}

/// The frames from a chunk's own object's table (its last `table_len(frames)` bytes), if it is one
/// for `frames` frames that make up `stored` bytes with it.
pub(crate) fn parse_table(table: &[u8], frames: usize, stored: u64) -> Option<Vec<Frame>> {
    if table.len() as u64 != table_len(frames) {
        return None;
    }
    let word = |at: usize| u32::from_le_bytes([table[at], table[at + 1], table[at + 2], table[at + 3]]);
    if word(0) != TABLE_MAGIC || word(4) as usize != TABLE_ENTRY * frames {
        return None;
    }
    let mut offset = 0u64;
    let mut listed = Vec::with_capacity(frames);
    for entry in table[8..].chunks_exact(TABLE_ENTRY) {
        let len = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let mut sum = [0; 8];
        sum.copy_from_slice(&entry[4..]);
        listed.push(Frame { object: 0, offset: u32::try_from(offset).ok()?, len, sum });
        offset += len as u64;
    }
    (offset + table_len(frames) == stored).then_some(listed)
}

/// The frames as the manifest lists them.
pub(crate) fn to_text(frames: &[Frame]) -> String {
    let mut bytes = Vec::with_capacity(ENTRY * frames.len());
    for f in frames {
        bytes.push(f.object);
        bytes.extend_from_slice(&f.offset.to_le_bytes());
        bytes.extend_from_slice(&f.len.to_le_bytes());
        bytes.extend_from_slice(&f.sum);
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The frames a manifest lists, if the text is a table of whole entries.
pub(crate) fn from_text(text: &str) -> Option<Vec<Frame>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    if bytes.len() % ENTRY != 0 {
        return None;
    }
    let word = |e: &[u8], at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
    let frames = bytes
        .chunks_exact(ENTRY)
        .map(|e| {
            let mut sum = [0; 8];
            sum.copy_from_slice(&e[9..]);
            Frame { object: e[0], offset: word(e, 1), len: word(e, 5), sum }
        })
        .collect();
    Some(frames)
}

/// Frames that one range request brings: of one object, stored one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) object: u8,
    /// The chunk's frames it holds.
    pub(crate) frames: Range<usize>,
    /// Where they are in the object.
    pub(crate) stored: Range<u64>,
}

/// The runs that bring frames `which` of a chunk.
pub(crate) fn runs(frames: &[Frame], which: Range<usize>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for index in which {
        let frame = &frames[index];
        match runs.last_mut() {
            Some(run) if run.object == frame.object && run.stored.end == frame.offset as u64 => {
                run.frames.end = index + 1;
                run.stored.end = frame.stored().end;
            }
            _ => runs.push(Run { object: frame.object, frames: index..index + 1, stored: frame.stored() }),
        }
    }
    runs
}

/// The frames that hold a chunk's bytes `from..to`.
pub(crate) fn covering(frame_size: u64, frames: usize, from: u64, to: u64) -> Range<usize> {
    (from / frame_size) as usize..(to.div_ceil(frame_size) as usize).min(frames)
}

/// Decompresses a run's stored bytes, frames of `frame_size` bytes of a chunk of `chunk_len`,
/// each matching its sum; or an error (EPROTO) naming `what`.
pub(crate) fn decode_run(
    stored: &[u8],
    run: &Run,
    frames: &[Frame],
    frame_size: usize,
    chunk_len: usize,
    what: &str,
) -> Result<Vec<u8>> {
    let start = run.frames.start * frame_size;
    let len = (run.frames.end * frame_size).min(chunk_len) - start;
    let bytes = decompress(stored, len, what)?;
    for (index, bytes) in run.frames.clone().zip(bytes.chunks(frame_size)) {
        if sum_of(index, bytes) != frames[index].sum {
            return Err(corrupt(what, format!("frame {index} does not match its sum")));
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

    fn of(stored: &[u8], run: &Run) -> Vec<u8> {
        stored[run.stored.start as usize..run.stored.end as usize].to_vec()
    }

    #[test]
    fn a_framed_chunk_is_one_zstd_stream_and_its_frames_read_alone() {
        let bytes = sample(65536 + 8192, 7);
        let (stored, listed) = encode(&bytes, 16384, 3, None).unwrap();
        let frames: Vec<Frame> = listed.iter().map(|(_, f)| *f).collect();
        assert_eq!(frames.len(), count(bytes.len() as u64, 16384));
        assert_eq!(zstd::bulk::decompress(&stored, bytes.len()).unwrap(), bytes, "the whole object decompresses");
        let table = &stored[stored.len() - table_len(frames.len()) as usize..];
        assert_eq!(parse_table(table, frames.len(), stored.len() as u64).unwrap(), frames);
        assert!(parse_table(table, frames.len(), stored.len() as u64 + 1).is_none());
        assert_eq!(from_text(&to_text(&frames)).unwrap(), frames);
        // Bytes 20000..40000 are in frames 1 and 2: one run.
        let which = covering(16384, frames.len(), 20000, 40000);
        assert_eq!(which, 1..3);
        let [run] = &runs(&frames, which)[..] else { panic!("one run") };
        let got = decode_run(&of(&stored, run), run, &frames, 16384, bytes.len(), "f").unwrap();
        assert_eq!(got, bytes[16384..3 * 16384]);
        // The short last frame.
        let [run] = &runs(&frames, covering(16384, frames.len(), 65536, 65536 + 8192))[..] else { panic!() };
        assert_eq!(decode_run(&of(&stored, run), run, &frames, 16384, bytes.len(), "f").unwrap(), bytes[65536..]);
    }

    #[test]
    fn a_delta_keeps_the_changed_frames_and_reads_the_rest_from_the_base() {
        let base = sample(65536, 7);
        let mut next = base.clone();
        next[16384 + 5] ^= 1;
        let (base_stored, base_listed) = encode(&base, 16384, 3, None).unwrap();
        let changed: Vec<bool> = sums(&next, 16384).iter().zip(&base_listed).map(|(s, (_, f))| *s != f.sum).collect();
        assert_eq!(changed, [false, true, false, false]);
        let (delta, own) = encode(&next, 16384, 3, Some(&changed)).unwrap();
        assert_eq!(own.len(), 1);
        // The chunk: frame 1 from the delta (object 0), the others from the base (object 1).
        let mut frames: Vec<Frame> = base_listed.iter().map(|(_, f)| Frame { object: 1, ..*f }).collect();
        frames[1] = own[0].1;
        let all = runs(&frames, 0..4);
        assert_eq!(
            all.iter().map(|r| (r.object, r.frames.clone())).collect::<Vec<_>>(),
            [(1, 0..1), (0, 1..2), (1, 2..4)]
        );
        let mut got = Vec::new();
        for run in &all {
            let object = if run.object == 0 { &delta } else { &base_stored };
            got.extend(decode_run(&of(object, run), run, &frames, 16384, next.len(), "f").unwrap());
        }
        assert_eq!(got, next);
    }

    #[test]
    fn a_damaged_frame_or_one_of_other_bytes_is_refused() {
        let bytes = sample(32768, 7);
        let (mut stored, listed) = encode(&bytes, 16384, 3, None).unwrap();
        let frames: Vec<Frame> = listed.iter().map(|(_, f)| *f).collect();
        let [run] = &runs(&frames, 0..1)[..] else { panic!() };
        // Sound frames of other bytes, or these bytes at another place: they decompress, and do
        // not match the sums.
        let (other, other_listed) = encode(&sample(32768, 11), 16384, 3, None).unwrap();
        let other_run = Run { stored: other_listed[0].1.stored(), ..run.clone() };
        let err = decode_run(&of(&other, &other_run), run, &frames, 16384, 32768, "c").unwrap_err();
        assert!(err.to_string().contains("frame 0 does not match its sum"), "{err}");
        let elsewhere = Run { frames: 1..2, ..run.clone() };
        assert!(
            decode_run(&of(&stored, run), &elsewhere, &frames, 16384, 32768, "c").is_err(),
            "frame 0 read as frame 1"
        );
        // A byte of the compressed data flipped: the frame's checksum (or its decoding) says so.
        stored[run.stored.end as usize - 6] ^= 0x40;
        let err = decode_run(&of(&stored, run), run, &frames, 16384, 32768, "chunk 0 of u").unwrap_err();
        assert_eq!(err.code(), "EPROTO");
        assert!(err.to_string().contains("chunk 0 of u is corrupt"), "{err}");
    }
}
