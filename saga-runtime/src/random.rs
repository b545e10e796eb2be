//! Randomness from the operating system's generator (`getrandom`): saga ids, the console's
//! tokens, and the seeds of retry jitter.

/// `N` bytes from the operating system's generator. Should it fail (no Linux, macOS or
/// Windows system does in practice), the bytes come from the process's hash keys (which the
/// standard library itself draws from the operating system once) mixed with the clock and a
/// counter: still unpredictable to another process, and never a panic.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if getrandom::fill(&mut out).is_err() {
        fallback(&mut out);
    }
    out
}

/// A random `u64`, as [`bytes`].
pub(crate) fn u64() -> u64 {
    u64::from_le_bytes(bytes())
}

/// Lowercase hex digits, two per byte.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
}

fn fallback(out: &mut [u8]) {
    use std::hash::{BuildHasher as _, Hasher as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    for chunk in out.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let word = hasher.finish().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_and_the_fallback_fills_every_byte() {
        let (a, b) = (bytes::<16>(), bytes::<16>());
        assert_ne!(a, b);
        let mut odd = [0u8; 13];
        fallback(&mut odd);
        let mut again = [0u8; 13];
        fallback(&mut again);
        assert_ne!(odd, again);
    }

    #[test]
    fn a_saga_id_is_a_version_4_uuid() {
        let ids: Vec<String> = (0..64).map(|_| crate::new_saga_id()).collect();
        for id in &ids {
            let parts: Vec<&str> = id.split('-').collect();
            let lengths: Vec<usize> = parts.iter().map(|p| p.len()).collect();
            assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
            assert!(
                id.bytes()
                    .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert!(parts[2].starts_with('4'), "{id}");
            assert!(
                matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "{id}"
            );
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
