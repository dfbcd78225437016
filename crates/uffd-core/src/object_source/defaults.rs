//! What an object source and a push do when not told otherwise, written once: the binding fills
//! what JavaScript leaves out from these and from the options' own defaults.

/// Bytes per chunk (per range request of a plain object, per stored chunk of a pushed snapshot).
pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;
/// Requests (or chunks of a push) in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Bytes per frame of a pushed chunk: the least a reader fetches of it.
pub const DEFAULT_FRAME_SIZE: usize = 16 << 10;

/// Refuses a chunk size that is not whole pages, saying which sizes are.
pub fn check_chunk_size(op: &'static str, chunk_size: usize) -> crate::error::Result<()> {
    let page = crate::region::base_page_size();
    if chunk_size == 0 || chunk_size % page != 0 {
        return Err(crate::error::Error::invalid(
            op,
            format!(
                "the chunk size {chunk_size} is not a multiple of the page size ({page} bytes): give whole pages, \
                 such as {DEFAULT_CHUNK_SIZE} (4 MiB, the default)"
            ),
        ));
    }
    Ok(())
}
