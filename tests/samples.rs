//! Seeded samples for the monitoring tests: normal values and categories in fixed shares.

/// A seeded normal sample (Box-Muller over a 64-bit LCG).
pub fn normal(n: usize, seed: u64, mean: f64, std: f64) -> Vec<f64> {
    let mut state = seed;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            mean + std * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect()
}

/// `n` categories in fixed shares (value, thousandths), interleaved.
pub fn mix(n: usize, shares: &[(&str, usize)]) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut at = (i * 7919) % 1000;
            for (value, share) in shares {
                if at < *share {
                    return value.to_string();
                }
                at -= share;
            }
            shares[0].0.to_string()
        })
        .collect()
}
