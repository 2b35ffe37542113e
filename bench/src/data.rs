//! Incompressible test data: one large random pool, and blobs made of a
//! unique prefix followed by a slice of the pool (so every blob has its own
//! digest without generating gigabytes per blob).

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// Size of the frames request bodies are sent in.
pub const FRAME: usize = 1 << 20;

/// Fills a buffer of `len` bytes from xoshiro256++ seeded with `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut rng = Rng::new(seed);
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        let x = rng.next().to_le_bytes();
        chunk.copy_from_slice(&x[..chunk.len()]);
    }
    Bytes::from(v)
}

/// xoshiro256++: fast, good enough that the data does not compress.
#[derive(Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator seeded through splitmix64.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A blob: its bytes as a list of segments (no copies), its digest and size.
#[derive(Clone)]
pub struct Blob {
    pub segments: Vec<Bytes>,
    pub digest: String,
    pub len: u64,
}

impl Blob {
    /// A blob from explicit bytes.
    pub fn from_bytes(b: Bytes) -> Blob {
        Blob::from_segments(vec![b])
    }

    /// A blob of the concatenated segments; hashes them.
    pub fn from_segments(segments: Vec<Bytes>) -> Blob {
        let mut h = Sha256::new();
        let mut len = 0u64;
        for s in &segments {
            h.update(s);
            len += s.len() as u64;
        }
        Blob { segments, digest: format!("sha256:{}", hex::encode(h.finalize())), len }
    }

    /// `len` bytes: a 32-byte prefix unique to `id`, then pool bytes from `offset`.
    pub fn unique(pool: &Bytes, id: u64, offset: usize, len: usize) -> Blob {
        let mut prefix = [0u8; 32];
        let mut rng = Rng::new(id ^ 0xC0FE_u64 << 32);
        for c in prefix.chunks_mut(8) {
            c.copy_from_slice(&rng.next().to_le_bytes());
        }
        prefix[..8].copy_from_slice(&id.to_le_bytes());
        let head = prefix.len().min(len);
        let mut segments = vec![Bytes::copy_from_slice(&prefix[..head])];
        let rest = len - head;
        if rest > 0 {
            let offset = offset % (pool.len() - rest + 1);
            segments.push(pool.slice(offset..offset + rest));
        }
        Blob::from_segments(segments)
    }

    /// The bytes `start..end` as frames of at most [`FRAME`] bytes (no copies).
    pub fn frames(&self, start: u64, end: u64) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut pos = 0u64;
        for s in &self.segments {
            let (s_start, s_end) = (pos, pos + s.len() as u64);
            pos = s_end;
            let (a, b) = (start.max(s_start), end.min(s_end));
            if a >= b {
                continue;
            }
            let mut i = (a - s_start) as usize;
            let stop = (b - s_start) as usize;
            while i < stop {
                let n = FRAME.min(stop - i);
                out.push(s.slice(i..i + n));
                i += n;
            }
        }
        out
    }

    /// Whether `data` equals the blob's bytes at `offset`.
    pub fn matches_at(&self, offset: u64, data: &[u8]) -> bool {
        let mut pos = 0u64;
        let mut want = offset;
        let mut rest = data;
        for s in &self.segments {
            let s_end = pos + s.len() as u64;
            if rest.is_empty() {
                break;
            }
            if want < s_end {
                let i = (want - pos) as usize;
                let n = (s.len() - i).min(rest.len());
                if s[i..i + n] != rest[..n] {
                    return false;
                }
                rest = &rest[n..];
                want += n as u64;
            }
            pos = s_end;
        }
        rest.is_empty()
    }
}

/// SHA-256 digest string of `b`.
pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A small image: config and layers pushed, then the manifest.
#[derive(Clone)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Bytes,
    pub manifest_digest: String,
}

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl Image {
    /// An image of `layers` with a small config unique to `id`.
    pub fn new(id: u64, layers: Vec<Blob>) -> Image {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["BENCH_ID=".to_owned() + &id.to_string()]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config = Blob::from_bytes(Bytes::from(config.to_string()));
        let descs: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": l.digest,
                    "size": l.len,
                })
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.digest,
                "size": config.len,
            },
            "layers": descs,
        });
        let manifest = Bytes::from(manifest.to_string());
        let manifest_digest = sha256(&manifest);
        Image { config, layers, manifest, manifest_digest }
    }
}

/// A blob of `size` bytes unique to `id`.
pub fn big_blob(pool: &Bytes, id: u64, size: u64) -> Blob {
    Blob::unique(pool, id, (id as usize) * 4096, size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_matches_cover_the_blob() {
        let pool = random_bytes(3 * FRAME + 17, 1);
        let b = Blob::unique(&pool, 7, 5, 2 * FRAME + 100);
        assert_eq!(b.len, 2 * FRAME as u64 + 100);
        let frames = b.frames(0, b.len);
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        assert_eq!(joined.len() as u64, b.len);
        assert_eq!(sha256(&joined), b.digest);
        assert!(b.matches_at(10, &joined[10..5000]));
        assert!(!b.matches_at(11, &joined[10..5000]));
        let mid = b.frames(20, 40);
        assert_eq!(mid.iter().map(|f| f.len()).sum::<usize>(), 20);
        assert_ne!(Blob::unique(&pool, 8, 5, 100).digest, Blob::unique(&pool, 7, 5, 100).digest);
    }
}
