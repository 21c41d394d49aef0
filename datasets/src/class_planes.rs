//! Per-class values laid out class-major (`[class][pixel]`): the probabilities a dense head
//! predicts for a chip, a slice or a stitched band of tiles.

/// Index of the largest of `classes` values at pixel `p` of planes of `plane` pixels (the first
/// on ties; 0 when every value is NaN).
pub fn argmax_at(probs: &[f32], classes: usize, plane: usize, p: usize) -> usize {
    (0..classes)
        .fold((0usize, f32::NEG_INFINITY), |b, k| {
            let v = probs[k * plane + p];
            if v > b.1 {
                (k, v)
            } else {
                b
            }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_largest_class_first_on_ties() {
        // Two classes over three pixels: [0.2, 0.5, 0.7] and [0.8, 0.5, NaN].
        let probs = [0.2, 0.5, 0.7, 0.8, 0.5, f32::NAN];
        assert_eq!(argmax_at(&probs, 2, 3, 0), 1);
        assert_eq!(argmax_at(&probs, 2, 3, 1), 0);
        assert_eq!(argmax_at(&probs, 2, 3, 2), 0);
    }
}
