//! `BindingRegion`: a region's handle in one JavaScript thread. The owner made the mapping; a view
//! (from `attach`) names a live region by id and never owns it, but keeps it in use until the view
//! is closed or collected; a handle the package makes to name a fault's region (`named`) does not.
//! A closed handle lets go of the region at once, so that the mapping goes as soon as no
//! ArrayBuffer in any thread needs it.

use crate::args::{to_id, to_usize};
use crate::errors::OrThrow;
use napi::bindgen_prelude::{ArrayBuffer, BigInt};
use napi::Env;
use napi_derive::napi;
use std::sync::{Arc, RwLock};
use uffd_core::{Error, MemoryKind, Region};

#[napi]
pub struct BindingRegion {
    region: RwLock<Option<Arc<Region>>>,
    id: u64,
    size: usize,
    page_size: usize,
    kind: MemoryKind,
    address: usize,
    alias_of: Option<u64>,
    private: bool,
    owner: bool,
    /// A view a user opened with `attach`: the region stays in use until it is let go.
    view: bool,
}

#[napi]
impl BindingRegion {
    #[napi(factory)]
    pub fn anonymous(env: Env, size: f64) -> napi::Result<Self> {
        let size = to_usize(&env, "size", size)?;
        Ok(Self::new(Region::anonymous(size).or_throw(&env)?, true))
    }

    #[napi(factory)]
    pub fn shmem(env: Env, size: f64, name: String, is_private: bool) -> napi::Result<Self> {
        let size = to_usize(&env, "size", size)?;
        let region = if is_private { Region::shmem_private(size, &name) } else { Region::shmem(size, &name) };
        Ok(Self::new(region.or_throw(&env)?, true))
    }

    #[napi(factory)]
    pub fn hugetlb(env: Env, size: f64, page_size: f64, name: String, is_private: bool) -> napi::Result<Self> {
        let size = to_usize(&env, "size", size)?;
        let page_size = to_usize(&env, "pageSize", page_size)?;
        let region = if is_private {
            Region::hugetlb_private(size, page_size, &name)
        } else {
            Region::hugetlb(size, page_size, &name)
        };
        Ok(Self::new(region.or_throw(&env)?, true))
    }

    /// A user's view of the live region with this id; fails if there is none or its owner closed it.
    #[napi(factory)]
    pub fn attach(env: Env, id: f64) -> napi::Result<Self> {
        let id = to_id(&env, id)?;
        let region = Region::attach(id).or_throw(&env)?;
        Ok(Self::handle(region, false, true))
    }

    /// A handle that names the live region with this id for a fault's handler, without keeping
    /// it in use; fails if there is none.
    #[napi(factory)]
    pub fn named(env: Env, id: f64) -> napi::Result<Self> {
        let id = to_id(&env, id)?;
        let region = Region::lookup(id)
            .ok_or_else(|| Error::invalid("attach", format!("no open region has id {id}: it was closed")))
            .or_throw(&env)?;
        Ok(Self::new(region, false))
    }

    pub(crate) fn new(region: Arc<Region>, owner: bool) -> Self {
        Self::handle(region, owner, false)
    }

    fn handle(region: Arc<Region>, owner: bool, view: bool) -> Self {
        BindingRegion {
            id: region.id(),
            size: region.size(),
            page_size: region.page_size(),
            kind: region.kind(),
            address: region.address(),
            alias_of: region.alias_of(),
            private: region.is_private(),
            region: RwLock::new(Some(region)),
            owner,
            view,
        }
    }

    /// The open region, or EBADF.
    pub(crate) fn region(&self, env: &Env, op: &'static str) -> napi::Result<Arc<Region>> {
        let region = self.region.read().unwrap_or_else(|p| p.into_inner()).clone();
        region.filter(|r| !r.is_closed()).ok_or(Error::Closed { op, what: "region" }).or_throw(env)
    }

    #[napi]
    pub fn alias(&self, env: Env) -> napi::Result<BindingRegion> {
        let region = self.region(&env, "mmap")?;
        Ok(Self::new(region.alias().or_throw(&env)?, true))
    }

    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.id as f64
    }
    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.size as f64
    }
    #[napi(getter)]
    pub fn page_size(&self) -> f64 {
        self.page_size as f64
    }
    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        self.kind.name()
    }
    #[napi(getter)]
    pub fn address(&self) -> BigInt {
        BigInt::from(self.address as u64)
    }
    #[napi(getter)]
    pub fn owner(&self) -> bool {
        self.owner
    }
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        let region = self.region.read().unwrap_or_else(|p| p.into_inner());
        region.as_ref().is_none_or(|r| r.is_closed())
    }
    #[napi(getter)]
    pub fn private(&self) -> bool {
        self.private
    }
    #[napi(getter)]
    pub fn alias_of(&self) -> Option<f64> {
        self.alias_of.map(|id| id as f64)
    }

    /// An ArrayBuffer over the whole mapping, zero-copy, or ERANGE if the region is more than
    /// `limit` bytes (the most one ArrayBuffer of this runtime holds).
    #[napi]
    pub fn buffer<'env>(&self, env: &'env Env, limit: f64) -> napi::Result<ArrayBuffer<'env>> {
        self.view(env, "buffer", 0, self.size, to_usize(env, "limit", limit)?)
    }

    /// An ArrayBuffer over `length` bytes of the mapping from `offset` on, at any alignment,
    /// zero-copy: a part of a region too large for one ArrayBuffer.
    #[napi]
    pub fn bytes<'env>(&self, env: &'env Env, offset: f64, length: f64, limit: f64) -> napi::Result<ArrayBuffer<'env>> {
        let offset = to_usize(env, "offset", offset)?;
        let length = to_usize(env, "length", length)?;
        self.view(env, "bytes", offset, length, to_usize(env, "limit", limit)?)
    }

    /// An external ArrayBuffer over part of the mapping. It keeps the mapping alive until it is
    /// collected or detached.
    fn view<'env>(
        &self,
        env: &'env Env,
        op: &'static str,
        offset: usize,
        length: usize,
        limit: usize,
    ) -> napi::Result<ArrayBuffer<'env>> {
        let region = self.region(env, op)?;
        let data = region.check_view(op, offset, length, limit).or_throw(env)?;
        if length == 0 {
            // Nothing to share, and an external buffer needs bytes behind it.
            return ArrayBuffer::from_data(env, Vec::new());
        }
        // SAFETY: `check_view` found `length` bytes of the mapping from `data` on; the mapping
        // stays while `region`, moved into the finalizer, is alive, and the finalizer runs when
        // the ArrayBuffer is collected or detached.
        unsafe { ArrayBuffer::from_external(env, data.as_ptr(), length, region, |_, region| drop(region)) }
    }

    /// The id to share, or EBADF if the region is closed: a token names a live region only.
    #[napi]
    pub fn share(&self, env: Env) -> napi::Result<f64> {
        self.region(&env, "share")?;
        Ok(self.id as f64)
    }

    /// Drops the pages of a range: touching them again faults.
    #[napi]
    pub fn discard(&self, env: Env, offset: f64, length: f64) -> napi::Result<()> {
        let offset = to_usize(&env, "offset", offset)?;
        let length = to_usize(&env, "length", length)?;
        self.region(&env, "madvise")?.discard(offset, length).or_throw(&env)
    }

    /// Closes the region if this handle owns it, or the view if it is one; either way this handle
    /// lets go of it.
    #[napi]
    pub fn close(&self) {
        let region = self.region.write().unwrap_or_else(|p| p.into_inner()).take();
        self.let_go(region);
    }

    fn let_go(&self, region: Option<Arc<Region>>) {
        match region {
            Some(region) if self.owner => region.close(),
            Some(region) if self.view => region.close_view(),
            _ => {}
        }
    }
}

impl Drop for BindingRegion {
    /// A view collected unclosed (or whose thread ended) lets go of the region; an owner's handle
    /// collected unclosed leaves the region to its last `Arc`, as before.
    fn drop(&mut self) {
        if self.view {
            let region = self.region.get_mut().unwrap_or_else(|p| p.into_inner()).take();
            self.let_go(region);
        }
    }
}

/// Detaches an ArrayBuffer, so that JavaScript can no longer reach the memory under it.
#[napi]
pub fn detach_buffer(buffer: ArrayBuffer) -> napi::Result<()> {
    buffer.detach()
}
