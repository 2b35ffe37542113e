//! [`FaultyStore`]: object_store's in-memory store with faults switched on
//! by the test: server-side copies refused (as S3's CopyObject does above
//! 5 GiB, counted) and GETs failing below a key part.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};

/// An in-memory store that passes everything through except the faults set.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<InMemory>,
    refuse_copies: AtomicBool,
    copies: AtomicUsize,
    /// GETs of keys containing this fail.
    fail_gets: Mutex<Option<String>>,
}

impl FaultyStore {
    /// No fault set yet, over `inner` (keep it for multipart uploads).
    pub fn new(inner: Arc<InMemory>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            refuse_copies: AtomicBool::new(false),
            copies: AtomicUsize::new(0),
            fail_gets: Mutex::new(None),
        })
    }

    /// Refuses every server-side copy from now on.
    pub fn refuse_copies(&self) {
        self.refuse_copies.store(true, Ordering::SeqCst);
    }

    /// How many server-side copies were asked for.
    pub fn copies(&self) -> usize {
        self.copies.load(Ordering::SeqCst)
    }

    /// Makes GETs of keys containing `part` fail (`None`: none fail).
    pub fn fail_gets_containing(&self, part: Option<&str>) {
        *self.fail_gets.lock().unwrap_or_else(|e| e.into_inner()) = part.map(str::to_owned);
    }

    fn fault(what: &str) -> object_store::Error {
        object_store::Error::Generic { store: "FaultyStore", source: what.to_owned().into() }
    }
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let failing = self.fail_gets.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if failing.is_some_and(|part| location.as_ref().contains(&part)) {
            return Err(FaultyStore::fault("injected GET failure"));
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.copies.fetch_add(1, Ordering::SeqCst);
        if self.refuse_copies.load(Ordering::SeqCst) {
            return Err(FaultyStore::fault("copy source too large"));
        }
        self.inner.copy_opts(from, to, options).await
    }
}
