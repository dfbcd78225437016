//! What an object source and a push do when not told otherwise, written once: the binding fills
//! what JavaScript leaves out from these and from the options' own defaults.

/// Bytes per chunk (per range request of a plain object, per stored chunk of a pushed snapshot).
pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;
/// Requests (or chunks of a push) in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Bytes per frame of a pushed chunk: the least a reader fetches of it.
pub const DEFAULT_FRAME_SIZE: usize = 16 << 10;
