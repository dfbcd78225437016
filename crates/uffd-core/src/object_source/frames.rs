//! A pushed chunk as stored: its bytes cut into frames (16 KiB by default), each compressed on its
//! own (zstd, with its checksum). A chunk lists, frame by frame, which stored object holds the
//! frame, where, its compressed length and its sum (the first 8 bytes of the BLAKE3 hash of its
//! index and bytes). Most chunks are one object of their own: their frames one after the other,
//! then a table of the frames (lengths and sums) in a zstd skippable frame, so the object is still
//! one valid zstd stream (`zstd -d` gives the chunk back), and a push that finds it stored already
//! can list it. A chunk that differs from the base snapshot's chunk at its place in a few frames
//! is a delta: an object of those frames only, and the base's objects for the rest. Each frame of
//! a delta's own object is a *patch*: compressed with the base's frame at its index (a plain one,
//! never a patch, so a reader needs one more frame at most) as zstd's prefix, so a frame that
//! differs from it in a few bytes takes a few bytes, not a page.
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
/// A frame in the manifest: its object (1 byte), offset there (4), length (4) and sum (8); a
/// patch (its object byte's high bit set) then its reference's object (1), offset (4), length (4).
const ENTRY: usize = 17;
const REFERENCE: usize = 9;
/// The high bit of a frame's object byte in the manifest: the frame is a patch.
const PATCHED: u8 = 0x80;

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
    /// For a patch: where the frame it was compressed against is (a plain frame, at the same index
    /// of the base's chunk).
    pub(crate) patch_of: Option<Place>,
}

/// Where a frame's compressed bytes are: which of the chunk's objects, and where in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) object: u8,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

impl Place {
    pub(crate) fn stored(&self) -> Range<u64> {
        self.offset as u64..self.offset as u64 + self.len as u64
    }
}

impl Frame {
    pub(crate) fn place(&self) -> Place {
        Place { object: self.object, offset: self.offset, len: self.len }
    }

    /// The plain frame that holds this frame's bytes, or that its patch was made against.
    pub(crate) fn plain(&self) -> Place {
        self.patch_of.unwrap_or_else(|| self.place())
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
        let entry = Frame {
            object: 0,
            offset: stored.len() as u32,
            len: compressed.len() as u32,
            sum: sum_of(index, frame),
            patch_of: None,
        };
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

/// Compresses frames of `bytes` as patches into one object (object 0): each named frame with its
/// reference's bytes (the base's plain frame at its index, stored at the given place) as prefix.
pub(crate) fn encode_patches(
    bytes: &[u8],
    frame_size: usize,
    level: i32,
    references: &[(usize, Place, Vec<u8>)],
) -> std::io::Result<(Vec<u8>, Vec<Kept>)> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let failed = |code| std::io::Error::other(zstd::zstd_safe::get_error_name(code));
    let mut context = CCtx::create();
    context.set_parameter(CParameter::CompressionLevel(level)).map_err(failed)?;
    context.set_parameter(CParameter::ChecksumFlag(true)).map_err(failed)?;
    let mut stored = Vec::new();
    let mut frames = Vec::with_capacity(references.len());
    for (index, place, reference) in references {
        let frame = &bytes[index * frame_size..((index + 1) * frame_size).min(bytes.len())];
        let mut compressed = Vec::with_capacity(zstd::zstd_safe::compress_bound(frame.len()));
        context.ref_prefix(reference).map_err(failed)?;
        context.compress2(&mut compressed, frame).map_err(failed)?;
        let entry = Frame {
            object: 0,
            offset: stored.len() as u32,
            len: compressed.len() as u32,
            sum: sum_of(*index, frame),
            patch_of: Some(*place),
        };
        frames.push((*index, entry));
        stored.extend_from_slice(&compressed);
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
        listed.push(Frame { object: 0, offset: u32::try_from(offset).ok()?, len, sum, patch_of: None });
        offset += len as u64;
    }
    (offset + table_len(frames) == stored).then_some(listed)
}

/// The frames as the manifest lists them.
pub(crate) fn to_text(frames: &[Frame]) -> String {
    let mut bytes = Vec::with_capacity(ENTRY * frames.len());
    for f in frames {
        bytes.push(if f.patch_of.is_some() { f.object | PATCHED } else { f.object });
        bytes.extend_from_slice(&f.offset.to_le_bytes());
        bytes.extend_from_slice(&f.len.to_le_bytes());
        bytes.extend_from_slice(&f.sum);
        if let Some(reference) = f.patch_of {
            bytes.push(reference.object);
            bytes.extend_from_slice(&reference.offset.to_le_bytes());
            bytes.extend_from_slice(&reference.len.to_le_bytes());
        }
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The frames a manifest lists, if the text is a table of whole entries.
pub(crate) fn from_text(text: &str) -> Option<Vec<Frame>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    let word = |e: &[u8], at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
    let mut frames = Vec::with_capacity(bytes.len() / ENTRY);
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let e = rest.get(..ENTRY)?;
        let mut sum = [0; 8];
        sum.copy_from_slice(&e[9..]);
        let patched = e[0] & PATCHED != 0;
        let patch_of = if patched {
            let r = rest.get(ENTRY..ENTRY + REFERENCE)?;
            Some(Place { object: r[0], offset: word(r, 1), len: word(r, 5) })
        } else {
            None
        };
        frames.push(Frame { object: e[0] & !PATCHED, offset: word(e, 1), len: word(e, 5), sum, patch_of });
        rest = &rest[ENTRY + if patched { REFERENCE } else { 0 }..];
    }
    Some(frames)
}

/// Frames that one range request brings: of one object, stored one after the other, all plain or
/// all patches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) object: u8,
    pub(crate) patches: bool,
    /// The chunk's frames it holds.
    pub(crate) frames: Range<usize>,
    /// Where they are in the object.
    pub(crate) stored: Range<u64>,
}

/// The runs that bring frames `which` of a chunk.
pub(crate) fn runs(frames: &[Frame], which: Range<usize>) -> Vec<Run> {
    gather(which.map(|index| (index, frames[index].place(), frames[index].patch_of.is_some())))
}

/// The runs that bring the plain frames the patches among frames `which` were made against.
pub(crate) fn reference_runs(frames: &[Frame], which: Range<usize>) -> Vec<Run> {
    gather(which.filter_map(|index| Some((index, frames[index].patch_of?, false))))
}

/// Frames (index, place, patch or not) in runs: one per stretch stored one after the other.
pub(crate) fn gather(frames: impl Iterator<Item = (usize, Place, bool)>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (index, place, patches) in frames {
        match runs.last_mut() {
            Some(run)
                if run.object == place.object
                    && run.patches == patches
                    && run.frames.end == index
                    && run.stored.end == place.offset as u64 =>
            {
                run.frames.end = index + 1;
                run.stored.end = place.stored().end;
            }
            _ => runs.push(Run { object: place.object, patches, frames: index..index + 1, stored: place.stored() }),
        }
    }
    runs
}

/// The frames that hold a chunk's bytes `from..to`.
pub(crate) fn covering(frame_size: u64, frames: usize, from: u64, to: u64) -> Range<usize> {
    (from / frame_size) as usize..(to.div_ceil(frame_size) as usize).min(frames)
}

/// Decompresses a run's stored bytes, frames of `frame_size` bytes of a chunk of `chunk_len`,
/// each matching its sum; or an error (EPROTO) naming `what`. A run of patches takes each one's
/// reference from `references` (the plain frames' bytes by index, from `decode_references`).
pub(crate) fn decode_run(
    stored: &[u8],
    run: &Run,
    frames: &[Frame],
    frame_size: usize,
    chunk_len: usize,
    references: &[(usize, Vec<u8>)],
    what: &str,
) -> Result<Vec<u8>> {
    let start = run.frames.start * frame_size;
    let len = (run.frames.end * frame_size).min(chunk_len) - start;
    let bytes = if run.patches {
        let mut bytes = Vec::with_capacity(len);
        for index in run.frames.clone() {
            let frame = &frames[index];
            let at = (frame.offset as u64 - run.stored.start) as usize;
            let patch = stored.get(at..at + frame.len as usize).unwrap_or_default();
            let reference = references.iter().find(|(i, _)| *i == index).map(|(_, bytes)| &bytes[..]);
            let want = ((index + 1) * frame_size).min(chunk_len) - index * frame_size;
            bytes.extend(decompress_patch(patch, reference.unwrap_or_default(), want, what)?);
        }
        bytes
    } else {
        decompress(stored, len, what)?
    };
    for (index, bytes) in run.frames.clone().zip(bytes.chunks(frame_size)) {
        if sum_of(index, bytes) != frames[index].sum {
            return Err(corrupt(what, format!("frame {index} does not match its sum")));
        }
    }
    Ok(bytes)
}

/// The plain frames of a run (`place_of` says where each index's is), one by one (a base's chunk
/// may end shorter or longer than this one), by index: what patches are made against.
pub(crate) fn decode_plain(
    stored: &[u8],
    run: &Run,
    place_of: impl Fn(usize) -> Option<Place>,
    frame_size: usize,
    what: &str,
) -> Result<Vec<(usize, Vec<u8>)>> {
    let mut decoded = Vec::with_capacity(run.frames.len());
    for index in run.frames.clone() {
        let Some(place) = place_of(index) else { continue };
        let at = (place.offset as u64 - run.stored.start) as usize;
        let compressed = stored.get(at..at + place.len as usize).unwrap_or_default();
        let bytes = zstd::bulk::decompress(compressed, frame_size)
            .map_err(|e| corrupt(what, format!("the frame patch {index} was made against does not decompress: {e}")))?;
        decoded.push((index, bytes));
    }
    Ok(decoded)
}

/// Decompresses a patch with its reference as prefix: it must give `len` bytes.
fn decompress_patch(patch: &[u8], reference: &[u8], len: usize, what: &str) -> Result<Vec<u8>> {
    use zstd::zstd_safe::DCtx;
    let failed =
        |code| corrupt(what, format!("a patch does not decompress: {}", zstd::zstd_safe::get_error_name(code)));
    let mut context = DCtx::create();
    context.ref_prefix(reference).map_err(failed)?;
    let mut bytes = Vec::with_capacity(len);
    context.decompress(&mut bytes, patch).map_err(failed)?;
    if bytes.len() != len {
        return Err(corrupt(what, format!("a patch gives {} bytes, not {len}", bytes.len())));
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
        let got = decode_run(&of(&stored, run), run, &frames, 16384, bytes.len(), &[], "f").unwrap();
        assert_eq!(got, bytes[16384..3 * 16384]);
        // The short last frame.
        let [run] = &runs(&frames, covering(16384, frames.len(), 65536, 65536 + 8192))[..] else { panic!() };
        assert_eq!(decode_run(&of(&stored, run), run, &frames, 16384, bytes.len(), &[], "f").unwrap(), bytes[65536..]);
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
            got.extend(decode_run(&of(object, run), run, &frames, 16384, next.len(), &[], "f").unwrap());
        }
        assert_eq!(got, next);
    }

    #[test]
    fn a_patch_made_against_the_base_frame_takes_a_few_bytes_and_reads_back_with_it() {
        // Bytes that do not compress: a plain frame takes its 16 KiB, a patch a few bytes.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let base: Vec<u8> = (0..65536)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut next = base.clone();
        next[16384 + 5] ^= 1;
        next[3 * 16384 + 100] ^= 1;
        let (base_stored, base_listed) = encode(&base, 16384, 3, None).unwrap();
        let reference = |index: usize| {
            let place = Place { object: 1, ..base_listed[index].1.place() };
            (index, place, base[index * 16384..(index + 1) * 16384].to_vec())
        };
        let (patches, own) = encode_patches(&next, 16384, 3, &[reference(1), reference(3)]).unwrap();
        let (plain, _) = encode(&next, 16384, 3, Some(&[false, true, false, true])).unwrap();
        assert!(
            patches.len() < 100 && patches.len() * 10 < plain.len(),
            "{} bytes, {} plain",
            patches.len(),
            plain.len()
        );
        let mut frames: Vec<Frame> = base_listed.iter().map(|(_, f)| Frame { object: 1, ..*f }).collect();
        for (at, frame) in &own {
            frames[*at] = *frame;
        }
        assert_eq!(from_text(&to_text(&frames)).unwrap(), frames, "patches and their references in the manifest");
        let which = 0..4;
        let references: Vec<(usize, Vec<u8>)> = reference_runs(&frames, which.clone())
            .iter()
            .flat_map(|run| decode_plain(&of(&base_stored, run), run, |i| frames[i].patch_of, 16384, "r").unwrap())
            .collect();
        assert_eq!(references.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 3]);
        let all = runs(&frames, which);
        assert_eq!(
            all.iter().map(|r| (r.object, r.patches, r.frames.clone())).collect::<Vec<_>>(),
            [(1, false, 0..1), (0, true, 1..2), (1, false, 2..3), (0, true, 3..4)]
        );
        let mut got = Vec::new();
        for run in &all {
            let object = if run.object == 0 { &patches } else { &base_stored };
            got.extend(decode_run(&of(object, run), run, &frames, 16384, next.len(), &references, "f").unwrap());
        }
        assert_eq!(got, next);
        // Against the wrong reference, a patch is refused, never served.
        let wrong = vec![(1, base[..16384].to_vec()), references[1].clone()];
        let err = decode_run(&of(&patches, &all[1]), &all[1], &frames, 16384, next.len(), &wrong, "f").unwrap_err();
        assert_eq!(err.code(), "EPROTO", "{err}");
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
        let other_run = Run { stored: other_listed[0].1.place().stored(), ..run.clone() };
        let err = decode_run(&of(&other, &other_run), run, &frames, 16384, 32768, &[], "c").unwrap_err();
        assert!(err.to_string().contains("frame 0 does not match its sum"), "{err}");
        let elsewhere = Run { frames: 1..2, ..run.clone() };
        assert!(
            decode_run(&of(&stored, run), &elsewhere, &frames, 16384, 32768, &[], "c").is_err(),
            "frame 0 read as frame 1"
        );
        // A byte of the compressed data flipped: the frame's checksum (or its decoding) says so.
        stored[run.stored.end as usize - 6] ^= 0x40;
        let err = decode_run(&of(&stored, run), run, &frames, 16384, 32768, &[], "chunk 0 of u").unwrap_err();
        assert_eq!(err.code(), "EPROTO");
        assert!(err.to_string().contains("chunk 0 of u is corrupt"), "{err}");
    }
}
