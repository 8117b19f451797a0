//! The numeric kernels under the encoder's blocks: plain-slice math (multiversioned for
//! AVX-512, AVX2 and baseline x86-64), attention over packed sequences (fused on the CPU,
//! candle ops elsewhere), rotary embeddings, and the candle custom ops that run them.

pub mod attention;
mod direct;
pub mod layout;
pub mod math;
pub mod ops;
pub mod rotary;
