//! The benchmark corpora shared by the backends' benches (included with `#[path]`):
//! deterministic sentences, uniform or of mixed lengths.

/// Sentences per corpus.
pub const SENTENCES: usize = 1000;

const WORDS: &[&str] = &[
    "model",
    "manager",
    "loads",
    "the",
    "shared",
    "weights",
    "once",
    "and",
    "every",
    "caller",
    "gets",
    "a",
    "handle",
    "to",
    "it",
    "while",
    "idle",
    "models",
    "unload",
    "after",
    "timeout",
    "embeddings",
    "are",
    "cached",
    "per",
    "text",
    "with",
    "length",
    "sorted",
    "batches",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "in",
    "paris",
    "music",
    "guitar",
    "kitchen",
];

/// Deterministic text of `n` words.
pub fn sentence(seed: usize, n: usize) -> String {
    let mut state = (seed as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            WORDS[(state >> 33) as usize % WORDS.len()]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(name, sentences)`: 12-word sentences, and lengths cycling from 4 to 200 words.
pub fn corpora() -> Vec<(&'static str, Vec<String>)> {
    let uniform = (0..SENTENCES).map(|i| sentence(i, 12)).collect();
    const MIXED_LENGTHS: [usize; 8] = [4, 120, 9, 60, 15, 200, 6, 30];
    let mixed = (0..SENTENCES)
        .map(|i| sentence(i, MIXED_LENGTHS[i % 8]))
        .collect();
    vec![("uniform", uniform), ("mixed", mixed)]
}

/// The median of `times`.
pub fn median(mut times: Vec<std::time::Duration>) -> std::time::Duration {
    times.sort();
    times[times.len() / 2]
}
