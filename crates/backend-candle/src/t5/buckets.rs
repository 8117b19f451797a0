//! T5's relative-position buckets: two-way in the encoder, one-way in the decoder.

/// The bucket of `relative_position` (key position minus query position), as Hugging Face's
/// `T5Attention._relative_position_bucket` computes it, including its float32 arithmetic so
/// distances on a bucket boundary land where they land there.
///
/// Two-way (encoder): half the buckets for keys before the query, half for keys after.
/// One-way (decoder): all buckets for keys before the query; later keys (masked anyway) and
/// the query itself are bucket 0.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets as i64;
    let mut bucket = 0;
    let distance = if bidirectional {
        num_buckets /= 2;
        if relative_position > 0 {
            bucket += num_buckets;
        }
        relative_position.abs()
    } else {
        (-relative_position).max(0)
    };
    let max_exact = num_buckets / 2;
    bucket += if distance < max_exact {
        distance
    } else {
        // torch: float32 log of the ratio, divided by a Python float (applied in float32).
        let scale = (max_distance as f64 / max_exact as f64).ln() as f32;
        let log_ratio = (distance as f32 / max_exact as f32).ln() / scale;
        let large = max_exact + (log_ratio * (num_buckets - max_exact) as f32) as i64;
        large.min(num_buckets - 1)
    };
    bucket as usize
}

/// Buckets of every (query, key) pair: `queries` rows starting at position `first_query`,
/// `keys` columns starting at 0, row-major.
pub fn bucket_grid(
    first_query: usize,
    queries: usize,
    keys: usize,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> Vec<u32> {
    let mut grid = Vec::with_capacity(queries * keys);
    for q in first_query..first_query + queries {
        for k in 0..keys {
            let relative = k as i64 - q as i64;
            grid.push(
                relative_position_bucket(relative, bidirectional, num_buckets, max_distance) as u32,
            );
        }
    }
    grid
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket;

    /// FLAN-T5's configuration: 32 buckets, max distance 128.
    fn two_way(rel: i64) -> usize {
        relative_position_bucket(rel, true, 32, 128)
    }
    fn one_way(rel: i64) -> usize {
        relative_position_bucket(rel, false, 32, 128)
    }

    #[test]
    fn two_way_buckets_match_hugging_face() {
        // 16 buckets per side, exact below 8, then 8 + floor(ln(d/8) / ln(16) * 8), at most 15;
        // keys after the query add 16.
        let expected = [
            (0, 0),
            (-1, 1),
            (-7, 7),
            (-8, 8),
            (-11, 8),
            (-12, 9),
            (-16, 10),
            (-22, 10),
            (-23, 11),
            (-32, 12),
            (-45, 12),
            (-64, 14),
            (-63, 13),
            (-90, 14),
            (-91, 15),
            (-500, 15),
            (1, 17),
            (7, 23),
            (9, 24),
            (16, 26),
            (127, 31),
            (1000, 31),
        ];
        for (rel, bucket) in expected {
            assert_eq!(two_way(rel), bucket, "relative position {rel}");
        }
    }

    #[test]
    fn one_way_buckets_match_hugging_face() {
        // All 32 buckets for the past, exact below 16, then 16 + floor(ln(d/16) / ln(8) * 16),
        // at most 31; the future is bucket 0.
        let expected = [
            (0, 0),
            (5, 0),
            (100, 0),
            (-1, 1),
            (-9, 9),
            (-15, 15),
            (-16, 16),
            (-18, 16),
            (-19, 17),
            (-20, 17),
            (-32, 21),
            (-64, 26),
            (-100, 30),
            (-127, 31),
            (-128, 31),
            (-5000, 31),
        ];
        for (rel, bucket) in expected {
            assert_eq!(one_way(rel), bucket, "relative position {rel}");
        }
    }

    #[test]
    fn the_decoder_differs_from_the_encoder_from_distance_nine() {
        // The bug of candle-transformers 0.11's T5: two-way buckets in the decoder.
        for d in 0..9 {
            assert_eq!(one_way(-d), two_way(-d), "distance {d}");
        }
        assert_eq!((one_way(-9), two_way(-9)), (9, 8));
    }
}
