//! The 3×3 same-size convolution (stride 1, padding 1, optionally of the 2× upsampled image) without
//! im2col: an AVX-512 microkernel reads the zero-padded image at each tap's offset. It gives the bits of
//! the im2col + `gemm` path (tested): each output is the bias plus the taps' products summed by fused
//! multiply-adds in the same order, in the same blocks of the inner dimension as `gemm` cuts it. Used
//! where the CPU has AVX-512F in the `avx512` build (the kernels that `gemm` then runs), on rows of at
//! least [`MIN_W`] pixels and at least [`NC`] output channels.

/// Pixel vectors (16 lanes each) per register tile.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
const NV: usize = 3;
/// Output channels per register tile.
pub(super) const NC: usize = 8;
/// The narrowest output rows the direct path takes: it computes the two padding columns of each row
/// too (2 of w + 2), and on 7-pixel rows that waste made it slower than im2col
/// (`cargo run --release --example direct_conv`).
pub(super) const MIN_W: usize = 14;

/// Whether this CPU and build run the direct path.
pub(super) fn available() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
    {
        false
    }
}

/// The block of the inner dimension `k` that `gemm` 0.19 uses for an m × n product (in its
/// orientation: m the pixels, n the output channels; its AVX-512 f32 kernel is 64 × 6): sums over
/// each block are added to the destination one block after another, so the direct path cuts `k` the
/// same way to give the same bits.
pub(super) fn gemm_kc(m: usize, n: usize, k: usize) -> usize {
    if m <= 64 && n <= 64 {
        k.min(512)
    } else {
        gemm_common::cache::kernel_params(m, n, k, 64, 6, std::mem::size_of::<f32>()).kc.max(1)
    }
}

/// Scratch sizes and the layout of one image's padded planes.
struct Plan {
    /// Padded row length (w + 2).
    pw: usize,
    /// Computed positions per channel (h rows of pw, rounded up to whole tiles).
    lr: usize,
    /// Distance between padded input channels.
    s: usize,
}

/// Zeros before each padded input channel (the taps reach one position before its first row).
const MARGIN: usize = 8;

impl Plan {
    fn of(vh: usize, vw: usize) -> Self {
        let pw = vw + 2;
        let tile = 48;
        let lr = (vh * pw).div_ceil(tile) * tile;
        Plan { pw, lr, s: MARGIN + (vh + 2) * pw + tile + pw + 8 }
    }
}

/// The convolution of each image of `xs` ([cin, h·w]; upsampled 2× first when `up`) by the weights
/// `wt` [cout, cin·9] and `bias`, into new [cout, vh·vw] buffers; `kc` is the inner-dimension block
/// ([`gemm_kc`]) and `scratch` is reused. The caller checks [`available`] and the shape conditions.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv3x3(xs: &[Vec<f32>], h: usize, w: usize, up: bool, cin: usize, wt: &[f32], bias: &[f32], kc: usize, scratch: &mut Vec<f32>) -> Vec<Vec<f32>> {
    let cout = bias.len();
    let kk = cin * 9;
    let (vh, vw) = if up { (2 * h, 2 * w) } else { (h, w) };
    let plan = Plan::of(vh, vw);
    let nb = cout.div_ceil(NC);
    let (nw, nx, no) = (nb * kk * NC, cin * plan.s, nb * NC * plan.lr);
    scratch.clear();
    scratch.resize(nw + nx + no, 0.0);
    let (wp, rest) = scratch.split_at_mut(nw);
    let (xp, op) = rest.split_at_mut(nx);
    // Weights [block][k][NC], zero for the channels past cout.
    for co in 0..cout {
        for k in 0..kk {
            wp[(co / NC) * kk * NC + k * NC + co % NC] = wt[co * kk + k];
        }
    }
    // The input offset of each inner index k = ci·9 + ky·3 + kx, from the tile's first position.
    let pw = plan.pw as isize;
    let offk: Vec<isize> = (0..kk).map(|k| (k / 9 * plan.s) as isize + ((k % 9 / 3) as isize - 1) * pw + (k % 3) as isize - 1).collect();
    let base = MARGIN + plan.pw;
    let mut outs = Vec::with_capacity(xs.len());
    for x in xs {
        debug_assert_eq!(x.len(), cin * h * w);
        for c in 0..cin {
            let ch = &mut xp[c * plan.s..(c + 1) * plan.s];
            for y in 0..vh {
                let d = &mut ch[MARGIN + (y + 1) * plan.pw + 1..][..vw];
                if up {
                    let src = &x[c * h * w + (y >> 1) * w..][..w];
                    d.iter_mut().enumerate().for_each(|(i, v)| *v = src[i >> 1]);
                } else {
                    d.copy_from_slice(&x[c * h * w + y * w..][..w]);
                }
            }
        }
        for (co, row) in op.chunks_mut(plan.lr).enumerate() {
            row.fill(bias.get(co).copied().unwrap_or(0.0));
        }
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        // SAFETY: the caller checked `available()` (AVX-512F); every position the kernel reads,
        // base + t + offk[k] + 47 for t < lr, lies inside xp by Plan's slack, and it writes op's
        // nb·NC rows of lr.
        unsafe {
            kernel(xp, base, &offk, wp, nb, kc, plan.lr, op)
        };
        let mut out = Vec::with_capacity(cout * vh * vw);
        for co in 0..cout {
            for y in 0..vh {
                out.extend_from_slice(&op[co * plan.lr + y * plan.pw + 1..][..vw]);
            }
        }
        outs.push(out);
    }
    outs
}

/// op[j][t] += Σ_k wp[k][j]·xp[base + t + offk[k]] for every tile of NV·16 positions t < lr and
/// every block of NC channels, k summed from zero in blocks of kc, each block's sum then added to op.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn kernel(xp: &[f32], base: usize, offk: &[isize], wp: &[f32], nb: usize, kc: usize, lr: usize, op: &mut [f32]) {
    use std::arch::x86_64::*;
    let kk = offk.len();
    let (xp, wp, opp) = (xp.as_ptr().add(base), wp.as_ptr(), op.as_mut_ptr());
    let mut t = 0;
    while t < lr {
        for cb in 0..nb {
            let wb = wp.add(cb * kk * NC);
            let mut k0 = 0;
            while k0 < kk {
                let k1 = (k0 + kc).min(kk);
                let mut acc = [[_mm512_setzero_ps(); NC]; NV];
                for k in k0..k1 {
                    let p = xp.offset(t as isize + *offk.get_unchecked(k));
                    let mut a = [_mm512_setzero_ps(); NV];
                    for (v, a) in a.iter_mut().enumerate() {
                        *a = _mm512_loadu_ps(p.add(16 * v));
                    }
                    let wv = wb.add(k * NC);
                    for j in 0..NC {
                        let b = _mm512_set1_ps(*wv.add(j));
                        for v in 0..NV {
                            acc[v][j] = _mm512_fmadd_ps(a[v], b, acc[v][j]);
                        }
                    }
                }
                for (v, accv) in acc.iter().enumerate() {
                    for (j, a) in accv.iter().enumerate() {
                        let q = opp.add((cb * NC + j) * lr + t + 16 * v);
                        _mm512_storeu_ps(q, _mm512_add_ps(_mm512_loadu_ps(q), *a));
                    }
                }
                k0 = k1;
            }
        }
        t += NV * 16;
    }
}

#[cfg(test)]
mod tests {
    use super::super::Conv;
    use candle_core::{Device, Tensor};
    use candle_nn::{Conv2d, Conv2dConfig};

    /// The direct path gives the im2col + gemm path's bits, on the shipped networks' 3×3 shapes and
    /// the diffusers-course and DDPM-CIFAR-10 ones (inner dimensions past gemm's 512 block included),
    /// channel counts that leave a partial block of 8, upsampled inputs and groups of several images.
    #[test]
    fn direct_gives_the_gemm_paths_bits() {
        if !super::available() {
            eprintln!("no AVX-512F here (or the build lacks `avx512`): the direct path is not used, nothing to compare");
            return;
        }
        let mut rng = crate::rng::seeded(3);
        let mut normal = |n: usize, s: f64| {
            let mut v = vec![0.0; n];
            crate::rng::fill_normal(&mut rng, &mut v);
            v.iter().map(|&x| (x * s) as f32).collect::<Vec<f32>>()
        };
        // (cin, cout, h, w, up, images, images per product)
        let shapes = [
            (16, 16, 28, 28, false, 3, 1),
            (48, 16, 28, 28, false, 2, 1),
            (64, 32, 28, 28, false, 2, 1),
            (32, 32, 14, 14, false, 7, 5),
            (96, 64, 14, 14, false, 6, 5),
            (128, 64, 16, 16, false, 2, 4),
            (32, 32, 7, 7, true, 5, 5),
            (3, 12, 20, 17, false, 3, 2),
            (20, 20, 15, 14, false, 2, 1),
            (256, 16, 14, 14, false, 2, 2),
        ];
        for (cin, cout, h, w, up, n, g) in shapes {
            let wt = normal(cout * cin * 9, (1.0 / (9.0 * cin as f64)).sqrt());
            let bias = normal(cout, 0.1);
            let weight = Tensor::from_vec(wt, (cout, cin, 3, 3), &Device::Cpu).unwrap();
            let b = Tensor::from_vec(bias, cout, &Device::Cpu).unwrap();
            let conv = Conv::from_candle(&Conv2d::new(weight, Some(b), Conv2dConfig { padding: 1, ..Default::default() }), [1; 4]).unwrap();
            let xs: Vec<Vec<f32>> = (0..n).map(|_| normal(cin * h * w, 1.0)).collect();
            let (mut col, mut f1, mut f2) = (Vec::new(), 0, 0);
            let (got, oh, ow) = conv.forward_many(&xs, h, w, up, g, &mut col, &mut f1);
            let (want, oh2, ow2) = conv.forward_many_gemm(&xs, h, w, up, g, &mut col, &mut f2);
            assert_eq!((oh, ow, f1), (oh2, ow2, f2));
            assert!(conv.direct(oh, ow, h, w, up), "{cin}→{cout} {h}×{w}: not on the direct path");
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let bad = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
                assert_eq!(bad, 0, "{cin}→{cout} {h}×{w} up={up}, image {i}: {bad} of {} values differ", a.len());
            }
        }
    }
}
