//! The digests that name contents, embeddings and files in records and caches: SHA-256,
//! written as lower-case hex.

use image::RgbImage;
use sha2::{Digest, Sha256};

/// SHA-256 of an image's size and RGB pixels, hex: what identifies the content.
pub fn image_hash(img: &RgbImage) -> String {
    let mut h = Sha256::new();
    h.update(img.width().to_le_bytes());
    h.update(img.height().to_le_bytes());
    h.update(img.as_raw());
    hex(&h.finalize())
}

/// Bytes as lower-case hex (the digests records and caches keep).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
