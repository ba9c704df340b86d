//! This machine's f32 peak, measured: every thread of rayon's pool runs independent chains of fused
//! multiply-adds in registers, in the widest vectors the CPU has (AVX-512, else AVX2 with FMA), so the
//! figure includes the clock the cores hold under that load. A percentage of it says how close a kernel
//! comes to the arithmetic limit of the machine it ran on, whatever that machine is.

use std::time::Instant;

/// Peak f32 GFLOP/s over all of rayon's threads and the instruction set it was measured with.
pub fn measured() -> (f64, &'static str) {
    let (flops_per_call, isa): (f64, &str) = kernel_info();
    let threads = rayon::current_num_threads();
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        let sink: f32 = rayon::broadcast(|_| run(CALLS)).iter().sum();
        let s = t0.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        best = best.max(flops_per_call * CALLS as f64 * threads as f64 / s / 1e9);
    }
    (best, isa)
}

/// Calls of the inner kernel per thread and measurement (≈ 0.1 s each).
const CALLS: usize = 200_000;
/// Inner repetitions of one call: 12 independent accumulators, so two FMA pipes of latency 4 are full.
const REPS: usize = 100;

fn kernel_info() -> (f64, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return ((REPS * 12 * 16 * 2) as f64, "AVX-512");
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return ((REPS * 12 * 8 * 2) as f64, "AVX2+FMA");
        }
    }
    ((REPS * 12 * 2) as f64, "scalar")
}

fn run(calls: usize) -> f32 {
    let mut acc = 0.0;
    for i in 0..calls {
        acc += one(i as f32 * 1e-9);
    }
    acc
}

fn one(seed: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked on the line above).
            return unsafe { fma512(seed) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked on the line above).
            return unsafe { fma256(seed) };
        }
    }
    let mut a = [seed; 12];
    for _ in 0..REPS {
        for v in a.iter_mut() {
            *v = v.mul_add(0.999_999, 1e-7);
        }
    }
    a.iter().sum()
}

macro_rules! fma_kernel {
    ($name:ident, $feat:literal, $ty:ty, $set1:ident, $fmadd:ident, $add:ident, $store:ident, $lanes:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        unsafe fn $name(seed: f32) -> f32 {
            use std::arch::x86_64::*;
            let m: $ty = $set1(0.999_999);
            let c: $ty = $set1(1e-7);
            let mut a: [$ty; 12] = [$set1(seed); 12];
            for _ in 0..REPS {
                for v in a.iter_mut() {
                    *v = $fmadd(*v, m, c);
                }
            }
            let mut s = a[0];
            for v in &a[1..] {
                s = $add(s, *v);
            }
            let mut out = [0.0f32; $lanes];
            // SAFETY: `out` holds exactly one vector of lanes.
            unsafe { $store(out.as_mut_ptr(), s) };
            out.iter().sum()
        }
    };
}
fma_kernel!(fma512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps, 16);
fma_kernel!(fma256, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps, 8);
