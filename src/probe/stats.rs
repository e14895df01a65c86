//! Statistics of one attention map (h·w values, row-major).

/// The cell with the largest value, as (index, value); `(0, 0.0)` for an empty map.
#[must_use]
pub fn peak(map: &[f32]) -> (usize, f32) {
    map.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or((0, 0.0), |(i, &v)| (i, v))
}

/// Shannon entropy of the map normalised to sum 1, in nats (ln(cells) = uniform); 0 for a map
/// that sums to 0 or less.
#[must_use]
pub fn entropy(map: &[f32]) -> f32 {
    let s: f32 = map.iter().sum();
    if s <= 0.0 {
        return 0.0;
    }
    -map.iter().map(|&v| v / s).filter(|&p| p > 0.0).map(|p| p * p.ln()).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_even_map_has_the_largest_entropy_and_a_spike_none() {
        let even = [0.25f32; 4];
        assert!((entropy(&even) - 4f32.ln()).abs() < 1e-6);
        assert_eq!(entropy(&[0.0, 1.0, 0.0]), 0.0);
        assert_eq!(entropy(&[0.0, 0.0]), 0.0);
        assert_eq!(peak(&[0.1, 0.7, 0.2]), (1, 0.7));
        assert_eq!(peak(&[]), (0, 0.0));
    }
}
