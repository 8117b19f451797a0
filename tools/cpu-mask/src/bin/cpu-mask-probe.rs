//! Prints the CPU features std detects, one `name=bool` per line: the crate's tests run a
//! patched copy of it under the preloaded library.

fn main() {
    println!("avx2={}", std::is_x86_feature_detected!("avx2"));
    println!("fma={}", std::is_x86_feature_detected!("fma"));
    println!("avx512f={}", std::is_x86_feature_detected!("avx512f"));
    println!("avx512vnni={}", std::is_x86_feature_detected!("avx512vnni"));
    println!("avxvnni={}", std::is_x86_feature_detected!("avxvnni"));
}
