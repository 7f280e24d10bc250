//! Which implementation of each primitive runs on this machine. The crates
//! choose at run time from CPU features; this mirrors their choice.

/// Prints the CPU and the backends the cipher crates select on it.
pub fn print() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("## Machine and backends");
    println!("cpu: {cpu}");
    println!(
        "build: target-cpu {}, {}",
        if cfg!(target_feature = "avx2") {
            "with AVX2 enabled at compile time (native?)"
        } else {
            "generic x86-64 (features detected at run time)"
        },
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release (fat LTO, 1 codegen unit)"
        }
    );
    #[cfg(target_arch = "x86_64")]
    {
        let has = |feature: bool| if feature { "yes" } else { "no" };
        let aes = std::arch::is_x86_feature_detected!("aes");
        let vaes = std::arch::is_x86_feature_detected!("vaes");
        let avx512f = std::arch::is_x86_feature_detected!("avx512f");
        let avx = std::arch::is_x86_feature_detected!("avx");
        let pclmul = std::arch::is_x86_feature_detected!("pclmulqdq");
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        let sha = std::arch::is_x86_feature_detected!("sha");
        let aes_backend = if avx512f && vaes {
            "VAES-512"
        } else if vaes {
            "VAES-256"
        } else if aes {
            "AES-NI"
        } else {
            "software (bitsliced)"
        };
        let ghash_backend = if avx && pclmul {
            "PCLMULQDQ (polyval intrinsics)"
        } else {
            "software"
        };
        let chacha_backend = if avx2 { "AVX2" } else { "SSE2" };
        println!("AES backend (aes 0.9): {aes_backend}");
        println!("GHASH backend (polyval 0.7): {ghash_backend}");
        println!(
            "ChaCha20 backend: {chacha_backend} (AVX-512 only with --cfg chacha20_avx512); Poly1305: {}",
            if avx2 { "AVX2" } else { "software" }
        );
        println!("SHA-256 with SHA-NI: {}", has(sha));
    }
    println!();
}
