//! Randomness for ids and secrets, from the operating system.

/// The system random generator failed; nothing can be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomFailed;

/// `N` random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomFailed> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| RandomFailed)?;
    Ok(b)
}

/// `n` random bytes as lower-case hex, for ids.
pub fn hex_id(n: usize) -> Result<String, RandomFailed> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|_| RandomFailed)?;
    Ok(hex::encode(b))
}

/// An id that sorts by creation time: `prefix`, the milliseconds since the
/// epoch (12 hex digits), then 8 random bytes. Ids that are stored in indexed
/// columns use it, so each insert lands at the right edge of the index
/// instead of on a random page (a group commit then writes a few pages, not
/// one per record).
pub fn ordered_id(prefix: &str, now_millis: i64) -> Result<String, RandomFailed> {
    let ms = u64::try_from(now_millis).unwrap_or(0) & 0xffff_ffff_ffff;
    Ok(format!("{prefix}{ms:012x}{}", hex_id(8)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ordered_ids_sort_by_time_and_do_not_repeat() {
        let a = ordered_id("tsk_", 1_700_000_000_000).unwrap();
        let b = ordered_id("tsk_", 1_700_000_000_001).unwrap();
        let c = ordered_id("tsk_", 1_700_000_000_001).unwrap();
        assert!(a < b && a < c, "{a} {b} {c}");
        assert_ne!(b, c);
        assert_eq!(a.len(), 4 + 12 + 16);
        assert!(a[4..].chars().all(|ch| ch.is_ascii_hexdigit()));
    }
}
