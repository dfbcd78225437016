//! `NativeRegion`: a region's handle in one JavaScript thread. The owner made the mapping; a view
//! (from `attach`) names a live region by id and never owns it.

use crate::args::{to_id, to_usize};
use crate::errors::OrThrow;
use napi::bindgen_prelude::{ArrayBuffer, BigInt};
use napi::Env;
use napi_derive::napi;
use std::sync::Arc;
use uffd_core::Region;

#[napi]
pub struct NativeRegion {
    pub(crate) inner: Arc<Region>,
    owner: bool,
}

#[napi]
impl NativeRegion {
    #[napi(factory)]
    pub fn anonymous(env: Env, size: f64) -> napi::Result<Self> {
        let size = to_usize(&env, "size", size)?;
        Ok(Self::owned(Region::anonymous(size).or_throw(&env)?))
    }

    #[napi(factory)]
    pub fn shmem(env: Env, size: f64, name: String) -> napi::Result<Self> {
        let size = to_usize(&env, "size", size)?;
        Ok(Self::owned(Region::shmem(size, &name).or_throw(&env)?))
    }

    #[napi(factory)]
    pub fn hugetlb(env: Env, size: f64, page_size: f64, name: String) -> napi::Result<Self> {
        let size = to_usize(&env, "size", size)?;
        let page_size = to_usize(&env, "pageSize", page_size)?;
        Ok(Self::owned(
            Region::hugetlb(size, page_size, &name).or_throw(&env)?,
        ))
    }

    /// A view of the live region with this id; fails if there is none.
    #[napi(factory)]
    pub fn attach(env: Env, id: f64) -> napi::Result<Self> {
        let id = to_id(&env, id)?;
        let inner = Region::lookup(id).ok_or(()).or_else(|()| {
            Err(uffd_core::Error::invalid(
                "attach",
                format!(
                    "no open region has id {id}: it was closed, or the token is not a region's"
                ),
            ))
            .or_throw(&env)
        })?;
        Ok(NativeRegion {
            inner,
            owner: false,
        })
    }

    fn owned(inner: Arc<Region>) -> Self {
        NativeRegion { inner, owner: true }
    }

    #[napi]
    pub fn alias(&self, env: Env) -> napi::Result<NativeRegion> {
        Ok(Self::owned(self.inner.alias().or_throw(&env)?))
    }

    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.inner.id() as f64
    }
    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.inner.size() as f64
    }
    #[napi(getter)]
    pub fn page_size(&self) -> f64 {
        self.inner.page_size() as f64
    }
    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        self.inner.kind().name()
    }
    #[napi(getter)]
    pub fn address(&self) -> BigInt {
        BigInt::from(self.inner.address() as u64)
    }
    #[napi(getter)]
    pub fn owner(&self) -> bool {
        self.owner
    }
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.inner.is_closed()
    }
    #[napi(getter)]
    pub fn alias_of(&self) -> Option<f64> {
        self.inner.alias_of().map(|id| id as f64)
    }

    /// An ArrayBuffer over the mapping, zero-copy. It keeps the mapping alive until it is
    /// collected or detached.
    #[napi]
    pub fn buffer<'env>(&self, env: &'env Env) -> napi::Result<ArrayBuffer<'env>> {
        self.inner.check_open("buffer").or_throw(env)?;
        let keep = self.inner.clone();
        // SAFETY: the mapping is `size` bytes long and stays mapped while `keep`, moved into the
        // finalizer, is alive; the finalizer runs when the ArrayBuffer is collected or detached.
        unsafe {
            ArrayBuffer::from_external(
                env,
                self.inner.as_ptr(),
                self.inner.size(),
                keep,
                |_, keep| drop(keep),
            )
        }
    }

    /// Closes the region if this handle owns it; a view only lets go.
    #[napi]
    pub fn close(&self) {
        if self.owner {
            self.inner.close();
        }
    }
}

/// Detaches an ArrayBuffer, so that JavaScript can no longer reach the memory under it.
#[napi]
pub fn detach_buffer(buffer: ArrayBuffer) -> napi::Result<()> {
    buffer.detach()
}
