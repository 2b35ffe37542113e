//! [`Counting`]: the bucket client seen through a counter of the requests
//! Cove makes, by kind ([`StoreRequests`]), for `/metrics` and the GC and
//! retention reports (what a run costs on a cloud store's bill). A listing
//! counts once however many pages the store returns it in; a multipart
//! upload counts its creation, each part sent through [`MultipartStore`]
//! and its completion or abort.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cove_core::storage::StoreRequests;
use futures::stream::BoxStream;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// Request counts shared by the wrappers of one bucket client.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    get: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    delete: AtomicU64,
    list: AtomicU64,
    copy: AtomicU64,
    multipart: AtomicU64,
}

impl Counts {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> StoreRequests {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StoreRequests {
            get: get(&self.get),
            head: get(&self.head),
            put: get(&self.put),
            delete: get(&self.delete),
            list: get(&self.list),
            copy: get(&self.copy),
            multipart: get(&self.multipart),
        }
    }
}

/// An [`ObjectStore`] that counts what it passes to `inner`.
#[derive(Debug)]
pub(crate) struct Counting<S: ?Sized> {
    inner: Arc<S>,
    counts: Arc<Counts>,
}

impl<S: ?Sized> Counting<S> {
    pub(crate) fn new(inner: Arc<S>, counts: Arc<Counts>) -> Counting<S> {
        Counting { inner, counts }
    }
}

impl std::fmt::Display for Counting<dyn ObjectStore> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting<dyn ObjectStore> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Counts::add(&self.counts.put, 1);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Counts::add(&self.counts.multipart, 1);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        Counts::add(if options.head { &self.counts.head } else { &self.counts.get }, 1);
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        use futures::StreamExt;
        let counts = self.counts.clone();
        let counted = locations.inspect(move |_| Counts::add(&counts.delete, 1)).boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        Counts::add(&self.counts.list, 1);
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        // The store's own start-after listing, not the default's filter.
        Counts::add(&self.counts.list, 1);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        Counts::add(&self.counts.list, 1);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        Counts::add(&self.counts.copy, 1);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        // A copy and a delete where the store has no rename of its own.
        Counts::add(&self.counts.copy, 1);
        self.inner.rename_opts(from, to, options).await
    }
}

#[async_trait::async_trait]
impl MultipartStore for Counting<dyn MultipartStore> {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        Counts::add(&self.counts.multipart, 1);
        self.inner.create_multipart(path).await
    }

    async fn create_multipart_opts(&self, path: &Path, opts: PutMultipartOptions) -> object_store::Result<MultipartId> {
        Counts::add(&self.counts.multipart, 1);
        self.inner.create_multipart_opts(path, opts).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        Counts::add(&self.counts.multipart, 1);
        self.inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        Counts::add(&self.counts.multipart, 1);
        self.inner.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        Counts::add(&self.counts.multipart, 1);
        self.inner.abort_multipart(path, id).await
    }
}
