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
