//! Upstream registry clients for Cove's pull-through cache (not yet built:
//! see the pull-through issue). The [`cove_core::Upstream`] trait is the
//! contract implementations will follow.
