//! The real programs the tests run against, each started on free loopback
//! ports with its state in a temp dir and stopped on drop: the CNCF
//! distribution registry, Caddy, containerd, Docker Engine, podman, skopeo, and the S3 servers
//! s3s-fs and Garage. A missing program fails the test and says how to
//! install it.

pub mod caddy;
pub mod containerd;
pub mod distribution;
pub mod docker;
pub mod podman;
pub mod s3;
pub mod skopeo;
