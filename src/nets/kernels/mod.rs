//! f32 CPU kernels for one image at a time, laid out [C, H·W]: 3×3 and 1×1 convolutions as GEMMs
//! (im2col, with nearest-neighbour 2× upsampling and asymmetric padding folded into the gather), group
//! normalisation fused with the activation and the time shift, linear maps and multi-head self-attention
//! as GEMMs. Each kernel runs on one thread (callers split a batch into fixed teams of images), so an
//! image's result does not depend on how many threads there are. The matrix products are the `gemm`
//! crate's (the same that candle uses on the CPU).
//!
//! - [`conv`]: [`Conv`], convolutions with their adjoint (col2im) and weight gradients; same-size 3×3
//!   ones run without im2col on AVX-512 CPUs (`direct`), with the same bits;
//! - [`norm`]: [`Norm`], group normalisation fused with the activation and the time terms, and its
//!   backward pass;
//! - [`linear`]: [`Lin`], linear maps on vectors and on the columns of a matrix;
//! - [`attention`]: [`SelfAttention`], diffusers' attention block with its backward pass.

use candle_core::Tensor;

use crate::lanes::exp_f32;

/// Defines `fn $name(args)` running `$body(args)` (an `#[inline(always)]` function) compiled for
/// AVX-512F where the CPU has it (`$wide`), else for AVX2 with FMA (`$avx2`), else for the baseline.
/// The bodies sum in fixed lanes and fuse a multiply and an add only by `f32::mul_add`, which rounds
/// once on every target (an instruction in the two vector builds, a library call in the baseline), so
/// each element sees the same operations in the same order in every build: the three give the same
/// bits (tested), only the vector width differs.
macro_rules! widest {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident, $wide:ident, $avx2:ident) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    return unsafe { $wide($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { $avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $wide($($arg: $ty),*) $(-> $ret)? {
            $body($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $avx2($($arg: $ty),*) $(-> $ret)? {
            $body($($arg),*)
        }
    };
}

pub mod attention;
pub mod conv;
mod direct;
pub mod linear;
pub mod norm;
mod winograd;

pub use attention::{AttnRec, SelfAttention};
pub use conv::{Conv, Lowering};
pub use linear::Lin;
pub use norm::{ChannelMap, Norm, NormBack};

/// An activation function, applied element-wise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// x σ(x) (diffusers' `silu` and `swish`).
    Silu,
    /// x tanh(softplus x).
    Mish,
    /// x Φ(x), with the exact error function.
    Gelu,
    /// max(x, 0).
    Relu,
}

impl Act {
    /// The activation named by a diffusers `act_fn` (anything unknown: SiLU; configs are checked before).
    pub fn of(name: &str) -> Act {
        match name {
            "mish" => Act::Mish,
            "gelu" => Act::Gelu,
            "relu" => Act::Relu,
            _ => Act::Silu,
        }
    }

    /// The activation at x.
    #[inline]
    pub fn at(self, x: f32) -> f32 {
        match self {
            Act::Silu => x / (1.0 + exp_f32(-x)),
            Act::Relu => x.max(0.0),
            Act::Gelu => {
                let v = x as f64;
                (0.5 * v * (1.0 + candle_core::cpu::erf::erf_f64(v / std::f64::consts::SQRT_2))) as f32
            }
            Act::Mish => {
                let sp = x.max(0.0) + (1.0 + exp_f32(-x.abs())).ln();
                x * sp.tanh()
            }
        }
    }

    /// The activation's derivative at x.
    #[inline]
    pub fn grad(self, x: f32) -> f32 {
        match self {
            Act::Silu => {
                let s = 1.0 / (1.0 + exp_f32(-x));
                s * (1.0 + x * (1.0 - s))
            }
            Act::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Act::Gelu => {
                let v = x as f64;
                let cdf = 0.5 * (1.0 + candle_core::cpu::erf::erf_f64(v / std::f64::consts::SQRT_2));
                (cdf + v * (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt()) as f32
            }
            Act::Mish => {
                let sp = x.max(0.0) + (1.0 + exp_f32(-x.abs())).ln();
                let t = sp.tanh();
                t + x * (1.0 - t * t) / (1.0 + exp_f32(-x))
            }
        }
    }
}

/// dst[m × n] (row stride `dst_rs`) = (dst if `acc`) + scale · A · B, with A[i, kk] = a[i·a_rs + kk·a_cs]
/// and B[kk, j] = b[kk·b_rs + j·b_cs]; one thread.
#[allow(clippy::too_many_arguments)]
pub fn gemm(m: usize, n: usize, k: usize, dst: &mut [f32], dst_rs: usize, acc: bool, a: &[f32], a_rs: usize, a_cs: usize, b: &[f32], b_rs: usize, b_cs: usize, scale: f32) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            (0..m).for_each(|i| dst[i * dst_rs..i * dst_rs + n].fill(0.0));
        }
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n);
    assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts above keep every index the strides reach inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// A tensor's values as f32 on the host.
pub(crate) fn host(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_device(&candle_core::Device::Cpu)?.to_vec1()
}

/// A parameter tensor: its name's last part, its shape and its values.
pub type Tensor2<'a> = (&'static str, Vec<usize>, &'a mut Vec<f32>);

/// Gradients of a network's parameters, one vector per tensor in the network's parameter order.
#[derive(Clone, Debug, Default)]
pub struct Grads(pub Vec<Vec<f32>>);

impl Grads {
    /// Zero gradients of tensors with these sizes.
    pub fn zeros(sizes: &[usize]) -> Self {
        Grads(sizes.iter().map(|&n| vec![0.0; n]).collect())
    }

    /// self += other, tensor by tensor.
    pub fn add(&mut self, other: &Grads) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            a.iter_mut().zip(b).for_each(|(a, &b)| *a += b);
        }
    }
}

/// [`exp_f32`] (Cephes' expf) by fused multiply-adds, for the element-wise kernels whose speed its
/// polynomial sets (softmax, SiLU): `f32::mul_add` rounds once on every target, so the bits are the
/// same in each build of `widest!`, and half the additions go (the softmax of a 196 × 196 matrix
/// took 0.36 against 0.50 ns per element on a Zen 4 core).
#[inline(always)]
pub(crate) fn exp_fma(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc.mul_add(std::f32::consts::LOG2_E, MAGIC);
    let kf = t - MAGIC;
    let k = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    // ln 2 = C1 + C2 with C1 exact in 9 bits; x − k·ln 2 by two fused steps.
    let r = kf.mul_add(2.121_944_4e-4, kf.mul_add(-0.693_359_375, xc));
    let p = r.mul_add(1.987_569_1e-4, 1.398_2e-3).mul_add(r, 8.333_452e-3).mul_add(r, 4.166_579_6e-2).mul_add(r, 1.666_666_5e-1).mul_add(r, 0.5);
    (r * r).mul_add(p, r + 1.0) * f32::from_bits(((k + 127) << 23) as u32)
}

/// Σ over each row of `dy` [rows, n] into `db`.
pub(crate) fn add_row_sums(dy: &[f32], n: usize, db: &mut [f32]) {
    for (r, d) in dy.chunks(n).zip(db.iter_mut()) {
        *d += r.iter().sum::<f32>();
    }
}

/// n normal values times s, from a stream seeded by `seed` (test inputs).
#[cfg(test)]
pub(crate) fn test_normals(seed: u64) -> impl FnMut(usize, f64) -> Vec<f32> {
    let mut rng = crate::rng::seeded(seed);
    move |n, s| {
        let mut v = vec![0.0; n];
        crate::rng::fill_normal(&mut rng, &mut v);
        v.iter().map(|&x| (x * s) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// exp_fma stays within one ulp of the correctly rounded exp over its whole range (as exp_f32
    /// does), keeps NaN and clamps the ends.
    #[test]
    fn exp_fma_within_one_ulp_of_f64_exp() {
        let mut worst = 0i64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp() as f32;
            worst = worst.max((want.to_bits() as i64 - exp_fma(x).to_bits() as i64).abs());
        }
        assert!(worst <= 1, "worst {worst} ulp");
        assert!(exp_fma(f32::NAN).is_nan());
        assert!(exp_fma(-1e4) < 2e-38 && exp_fma(1e4) > 1e38);
    }

    #[test]
    fn gemm_matches_naive_product_with_strides() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        // A stored transposed (a_rs = 1, a_cs = m), B row-major.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let mut d = vec![1.0f32; m * n];
        gemm(m, n, k, &mut d, n, true, &at, 1, m, &b, n, 1, 2.0);
        for i in 0..m {
            for j in 0..n {
                let want = 1.0 + 2.0 * (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum::<f32>();
                assert!((d[i * n + j] - want).abs() < 1e-5, "{i},{j}");
            }
        }
    }
}
