//! The shared Upstream suite (cove-testkit `suites::upstream`) on the real
//! client and on the in-memory fake, so both keep one contract:
//! `OciUpstream` against the CNCF distribution registry (well-behaved part)
//! and against the fault registry (fault part), and `FakeUpstream` for
//! both parts.

mod common;

use std::time::Duration;

use common::upstream_from_toml;
use cove_core::Upstream;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::skopeo::skopeo_push;
use cove_testkit::suites::upstream::{faults, run_all, FaultRegistry, Fixture};
use cove_testkit::FakeUpstream;

/// The suite's fixture, built in a temp dir that must outlive it.
fn fixture() -> (tempfile::TempDir, Fixture) {
    let work = tempfile::tempdir().expect("tempdir");
    let f = Fixture::build(&work.path().join("layout"), "library/suite");
    (work, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_upstream_against_distribution_passes_the_suite() {
    let (_work, f) = fixture();
    let reg = Distribution::start(None, None).await;
    for tag in [&f.image_tag, &f.index_tag] {
        skopeo_push(&f.layout.dir, tag, &format!("{}/{}:{tag}", reg.authority(), f.repo), None);
    }
    let up = upstream_from_toml("docker.io", &format!("url = \"{}\"", reg.url()));
    assert_eq!(up.host(), "docker.io");
    run_all(&up, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_upstream_against_the_fault_registry_passes_the_fault_suite() {
    let (_work, f) = fixture();
    let reg = FaultRegistry::start(&f).await;
    let up = upstream_from_toml(
        "faulty.example",
        &format!("url = \"{}\"\nretries = 1\nread_timeout = \"500ms\"", reg.server.url()),
    )
    .with_backoff(Duration::from_millis(10), Duration::from_millis(50));
    faults(&up, &f, &reg).await;
}

#[tokio::test]
async fn fake_upstream_passes_the_suite() {
    let (_work, f) = fixture();
    let fake = FakeUpstream::new("docker.io");
    f.load_fake(&fake);
    assert_eq!(fake.host(), "docker.io");
    run_all(&fake, &f).await;
    faults(&fake, &f, &fake).await;
}

#[tokio::test]
async fn fake_upstream_counts_calls_and_fails_only_the_next_ones() {
    let (_work, f) = fixture();
    let fake = FakeUpstream::new("ghcr.io");
    f.load_fake(&fake);
    fake.fail_next(2, cove_testkit::Fault::Status(503));
    let tag = cove_testkit::util::reference(&f.image_tag);
    for _ in 0..2 {
        let r = fake.get_manifest(&f.repo, &tag).await;
        assert!(matches!(r, Err(cove_core::upstream::UpstreamError::Unavailable(_))), "{r:?}");
    }
    let m = fake.get_manifest(&f.repo, &tag).await.expect("the third call is answered");
    assert_eq!(m.bytes.as_deref(), Some(&f.image.manifest.bytes[..]));
    assert_eq!(fake.count("get_manifest"), 3);
    assert_eq!(fake.calls()[0].what, f.image_tag);
    fake.untag(f.repo.as_str(), &f.image_tag);
    assert!(matches!(fake.head_manifest(&f.repo, &tag).await, Err(cove_core::upstream::UpstreamError::NotFound)));
}
