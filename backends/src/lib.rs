//! Cove's storage backends: [`FsStorage`] (the local filesystem, the
//! default) and [`ObjectStorage`] (object stores). Each implements
//! [`cove_core::Storage`] and passes the shared conformance suite.

pub mod fs;

pub use fs::FsStorage;
pub mod object;
pub use object::ObjectStorage;
