//! The 3×3 same-size convolution (stride 1, padding 1, optionally of the 2× upsampled image) without
//! im2col: an AVX-512 microkernel reads the zero-padded image at each tap's offset. It gives the bits of
//! the im2col + `gemm` path (tested): each output is the bias plus the taps' products summed by fused
//! multiply-adds in the same order, in the same blocks of the inner dimension as `gemm` cuts it. Used
//! where the CPU has AVX-512F in the `avx512` build (the kernels that `gemm` then runs), on the
//! shapes [`takes`] names that Winograd's F(2×2, 3×3) does not take ([`super::winograd`], whose 16
//! products run on this kernel too).

use super::norm::{mapped_channel, ChannelMap};

/// Pixel vectors (16 lanes each) per register tile.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
const NV: usize = 3;
/// Output channels per register tile.
pub(super) const NC: usize = 8;
/// Output rows at least this wide take the direct path whatever the channels.
const MIN_W: usize = 14;
/// Rows from [`NARROW_W`] to [`MIN_W`] pixels take it into at most this many channels. Each row
/// computes one padding column too (w + 1 positions) and the last vector of a plane is part padding,
/// so on narrow rows up to a third of the work is thrown away; im2col's cost next to the product's
/// falls as the channels grow, and there it wins: on 7×7 rows, direct against im2col + GEMM was
/// 184 against 235 µs into 32 channels, 697 against 758 into 64, 2811 against 2722 into 128, and on
/// 8×8 rows into 256, 14.0 against 13.1 ms; on 4×4 rows into 256, 5.7 against 3.5 ms
/// (`cargo run --release --example conv_lowering`, one thread, Zen 4).
const NARROW_MAX_C: usize = 64;
/// The narrowest rows the direct path takes.
const NARROW_W: usize = 7;

/// Whether output rows of `ow` pixels into `cout` channels take the direct path (on a CPU and build
/// that run it, [`available`]).
pub(super) fn takes(ow: usize, cout: usize) -> bool {
    cout >= NC && (ow >= MIN_W || (ow >= NARROW_W && cout <= NARROW_MAX_C))
}

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

/// The k block ([`gemm_kc`]) of each of `n` images cut into products of `group` images of `p`
/// pixels into `cout` channels: the blocks the im2col path would use, image by image.
pub(super) fn blocks_per_image(n: usize, group: usize, p: usize, cout: usize, kk: usize) -> Vec<usize> {
    let g = group.max(1);
    (0..n).map(|i| gemm_kc((n - i / g * g).min(g) * p, cout, kk)).collect()
}

/// Scratch sizes and the layout of one image's padded planes.
struct Plan {
    /// Padded row length (w + 1): the zero column after each row is also the one before the next.
    pw: usize,
    /// Computed positions per channel (h rows of pw, rounded up to whole vectors of 16).
    lr: usize,
    /// Distance between padded input channels.
    s: usize,
}

/// Zeros before each padded input channel (the taps reach one position before its first row).
const MARGIN: usize = 8;

impl Plan {
    fn of(vh: usize, vw: usize) -> Self {
        let pw = vw + 1;
        let tile = 48;
        let lr = (vh * pw).div_ceil(16) * 16;
        Plan { pw, lr, s: MARGIN + (vh + 2) * pw + tile + pw + 8 }
    }
}

/// Where each of the lr/16 vectors of positions goes in the output, for `rows` rows of `vw` pixels
/// laid `pw` apart: the mask of its positions that are pixels (not a padding column, not past the
/// last row) and the index of its first pixel.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
pub(super) fn placements(lr: usize, pw: usize, rows: usize, vw: usize) -> Vec<(u16, usize)> {
    let n = rows * pw;
    (0..lr / 16)
        .map(|v| {
            let p0 = 16 * v;
            let mask = (0..16).filter(|&i| p0 + i < n && (p0 + i) % pw < vw).fold(0u16, |m, i| m | 1 << i);
            let first = if p0 < n { (p0 / pw) * vw + (p0 % pw).min(vw) } else { rows * vw };
            (mask, first)
        })
        .collect()
}

/// The convolution of each image of `xs` ([cin, h·w]; mapped by `maps[i]` when given, then upsampled
/// 2× when `up`) by the weights
/// `wt` [cout, cin·9] and `bias`, into new [cout, vh·vw] buffers; `kcs[i]` is image i's
/// inner-dimension block ([`gemm_kc`] of the product its group would make) and `scratch` is reused.
/// The caller checks [`available`] and the shape conditions.
#[allow(clippy::too_many_arguments)]
// Without AVX-512 nothing calls it (`available` is false) and the kernel call is compiled out.
#[cfg_attr(not(all(target_arch = "x86_64", feature = "avx512")), allow(unused_variables, unused_mut))]
pub(super) fn conv3x3(xs: &[Vec<f32>], maps: Option<&[ChannelMap]>, kcs: &[usize], h: usize, w: usize, up: bool, cin: usize, wt: &[f32], bias: &[f32], scratch: &mut Vec<f32>) -> Vec<Vec<f32>> {
    debug_assert_eq!(xs.len(), kcs.len());
    let cout = bias.len();
    let kk = cin * 9;
    let (vh, vw) = if up { (2 * h, 2 * w) } else { (h, w) };
    let plan = Plan::of(vh, vw);
    let nb = cout.div_ceil(NC);
    // Partial sums between k blocks, only when some image's k is cut into several.
    let blocks = kcs.iter().any(|&kc| kc < kk);
    let (nw, nx, no) = (nb * kk * NC, cin * plan.s, if blocks { nb * NC * plan.lr } else { 0 });
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
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    let place = placements(plan.lr, plan.pw, vh, vw);
    let mut bpad = bias.to_vec();
    bpad.resize(nb * NC, 0.0);
    let mut outs = Vec::with_capacity(xs.len());
    let mut mapped = vec![0.0f32; if maps.is_some() { h * w } else { 0 }];
    for (i, (x, &kc)) in xs.iter().zip(kcs).enumerate() {
        debug_assert_eq!(x.len(), cin * h * w);
        // The pixels of each channel (mapped first when asked); the padding stays zero from the
        // fill above.
        for c in 0..cin {
            let src = mapped_channel(maps, i, x, c, h * w, &mut mapped);
            let ch = &mut xp[c * plan.s..(c + 1) * plan.s];
            for y in 0..vh {
                let d = &mut ch[base + y * plan.pw..][..vw];
                if up {
                    let src = &src[(y >> 1) * w..][..w];
                    d.iter_mut().enumerate().for_each(|(i, v)| *v = src[i >> 1]);
                } else {
                    d.copy_from_slice(&src[y * w..][..w]);
                }
            }
        }
        let mut out = Vec::<f32>::with_capacity(cout * vh * vw);
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        // SAFETY: the caller checked `available()` (AVX-512F); every position the kernel reads,
        // base + t + offk[k] for t < lr, lies inside xp by Plan's slack; op holds nb·NC rows of
        // lr when k is cut into blocks; the kernel writes each of out's cout·vh·vw values once (the
        // placements cover every pixel of the h rows), so its length may then be set.
        unsafe {
            kernel(xp, base, &offk, wp, &bpad, cout, kc, plan.lr, &place, vh * vw, op, out.as_mut_ptr());
            out.set_len(cout * vh * vw);
        }
        outs.push(out);
    }
    outs
}

/// Slack the transposed probabilities of [`pv`] need past their l·l values.
pub(super) const PV_SLACK: usize = 48;

/// o[a][i] = Σ_j v[a·v_rs + j]·pt[j·l + i] for a < dh, i < l, into `o` (rows l apart): P V of one
/// attention head with P stored transposed (rows j), on the direct kernel (the channels a, the
/// positions i, a tap per j at offset j·l; each sum in the order of j from zero, in the blocks of j
/// that gemm cuts: the bits of `gemm` on the same operands). `pt` holds [`PV_SLACK`] values past its
/// l·l. The caller checks [`available`].
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
pub(super) fn pv(v: &[f32], v_rs: usize, pt: &[f32], dh: usize, l: usize, o: &mut [f32]) {
    assert!(pt.len() >= l * l + PV_SLACK && o.len() >= dh * l && v.len() >= (dh - 1) * v_rs + l);
    let nb = dh.div_ceil(NC);
    let mut wp = vec![0.0f32; nb * l * NC];
    for a in 0..dh {
        for j in 0..l {
            wp[(a / NC) * l * NC + j * NC + a % NC] = v[a * v_rs + j];
        }
    }
    let offk: Vec<isize> = (0..l).map(|j| (j * l) as isize).collect();
    let lr = l.div_ceil(16) * 16;
    // One row of l queries.
    let place = placements(lr, l, 1, l);
    let zero = vec![0.0f32; nb * NC];
    let kc = gemm_kc(l, dh, l);
    let mut op = vec![0.0f32; if kc < l { nb * NC * lr } else { 0 }];
    // SAFETY: the caller checked `available()` (AVX-512F); the kernel reads pt at j·l + t for t < lr,
    // below l·l + 16 ≤ pt.len() (asserted), writes dh rows of l values into o (asserted) and keeps
    // partial sums in op's nb·NC rows of lr when k is cut into blocks.
    unsafe { kernel(pt, 0, &offk, &wp, &zero, dh, kc, lr, &place, l, &mut op, o.as_mut_ptr()) };
}

/// For every tile of NV·16 positions t < lr (the last one shorter when lr is not a multiple) and
/// every block of NC channels j: out_j[t] = bias[j] + Σ_k wp[k][j]·xp[base + t + offk[k]], k summed
/// from zero in blocks of kc and each block's sum added to the running total (kept in op between
/// blocks), as `gemm` does; the last block's totals go to the pixels' places in `out` ([cout, n]),
/// by `place`.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel(xp: &[f32], base: usize, offk: &[isize], wp: &[f32], bias: &[f32], cout: usize, kc: usize, lr: usize, place: &[(u16, usize)], n: usize, op: &mut [f32], out: *mut f32) {
    let f = Fixed { xp: xp.as_ptr().add(base), offk, wp: wp.as_ptr(), bias, cout, kc, lr, place, n, op: op.as_mut_ptr(), out };
    let mut t = 0;
    while t + NV * 16 <= lr {
        tile::<NV>(&f, t);
        t += NV * 16;
    }
    match (lr - t) / 16 {
        2 => tile::<2>(&f, t),
        1 => tile::<1>(&f, t),
        _ => {}
    }
}

/// What every tile of [`kernel`] shares.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
struct Fixed<'a> {
    xp: *const f32,
    offk: &'a [isize],
    wp: *const f32,
    bias: &'a [f32],
    cout: usize,
    kc: usize,
    lr: usize,
    place: &'a [(u16, usize)],
    n: usize,
    op: *mut f32,
    out: *mut f32,
}

/// [`kernel`]'s work on the V·16 positions from t.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const V: usize>(f: &Fixed, t: usize) {
    use std::arch::x86_64::*;
    let kk = f.offk.len();
    for cb in 0..f.bias.len() / NC {
        let wb = f.wp.add(cb * kk * NC);
        let mut k0 = 0;
        while k0 < kk {
            let k1 = (k0 + f.kc).min(kk);
            let mut acc = [[_mm512_setzero_ps(); NC]; V];
            // At least one k (k1 > k0: kc ≥ 1), so the loop is written to run once before its test:
            // with `for`, the compiler kept the zeros for an empty range in memory, a 1.5 KB memset
            // per block (4–5% of a network's forward on an Ice Lake Xeon, by `perf`).
            let mut k = k0;
            loop {
                let p = f.xp.offset(t as isize + *f.offk.get_unchecked(k));
                let mut a = [_mm512_setzero_ps(); V];
                for (v, a) in a.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(p.add(16 * v));
                }
                let wv = wb.add(k * NC);
                for j in 0..NC {
                    let b = _mm512_set1_ps(*wv.add(j));
                    for v in 0..V {
                        acc[v][j] = _mm512_fmadd_ps(a[v], b, acc[v][j]);
                    }
                }
                k += 1;
                if k >= k1 {
                    break;
                }
            }
            for (v, accv) in acc.iter().enumerate() {
                let (mask, first) = *f.place.get_unchecked(t / 16 + v);
                for (j, a) in accv.iter().enumerate() {
                    let c = cb * NC + j;
                    let q = f.op.add(c * f.lr + t + 16 * v);
                    let prev = if k0 == 0 { _mm512_set1_ps(*f.bias.get_unchecked(c)) } else { _mm512_loadu_ps(q) };
                    let sum = _mm512_add_ps(prev, *a);
                    if k1 < kk {
                        _mm512_storeu_ps(q, sum);
                    } else if c < f.cout && mask == u16::MAX {
                        _mm512_storeu_ps(f.out.add(c * f.n + first), sum);
                    } else if c < f.cout && mask != 0 {
                        // The pixels among these 16 positions are consecutive in out.
                        let packed = _mm512_maskz_compress_ps(mask, sum);
                        _mm512_mask_storeu_ps(f.out.add(c * f.n + first), (1u32 << mask.count_ones()).wrapping_sub(1) as u16, packed);
                    }
                }
            }
            k0 = k1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_normals as normals;
    use super::super::{Conv, Lowering};
    use candle_core::{Device, Tensor};
    use candle_nn::{Conv2d, Conv2dConfig};

    /// Whether this CPU and build run the direct path (else the tests have nothing to compare: said).
    fn direct_here() -> bool {
        if !super::available() {
            eprintln!("no AVX-512F here (or the build lacks `avx512`): the direct path is not used, nothing to compare");
        }
        super::available()
    }


    /// The direct path gives the im2col + gemm path's bits, on the shipped networks' 3×3 shapes and
    /// the diffusers-course and DDPM-CIFAR-10 ones (inner dimensions past gemm's 512 block included),
    /// channel counts that leave a partial block of 8, upsampled inputs and groups of several images.
    #[test]
    fn direct_gives_the_gemm_paths_bits() {
        if !direct_here() {
            return;
        }
        let mut normal = normals(3);
        // (cin, cout, h, w, up, images, images per product)
        let shapes = [
            (16, 16, 28, 28, false, 3, 1),
            (48, 16, 28, 28, false, 2, 1),
            (64, 32, 28, 28, false, 2, 1),
            (32, 32, 14, 14, false, 7, 5),
            (96, 64, 14, 14, false, 6, 5),
            (128, 64, 16, 16, false, 2, 4),
            (32, 32, 7, 7, true, 5, 5),
            (32, 32, 7, 7, false, 16, 16),
            (64, 64, 7, 7, false, 9, 16),
            (64, 48, 8, 8, false, 3, 3),
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
            let (got, oh, ow) = conv.forward_many_as(Lowering::Direct, &xs, None, h, w, up, g, &mut col, &mut f1);
            let (want, oh2, ow2) = conv.forward_many_gemm(&xs, h, w, up, g, &mut col, &mut f2);
            assert_eq!((oh, ow, f1), (oh2, ow2, f2));
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let bad = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
                assert_eq!(bad, 0, "{cin}→{cout} {h}×{w} up={up}, image {i}: {bad} of {} values differ", a.len());
            }
        }
    }

    /// The direct path's adjoint (the convolution by the flipped, transposed weights, then the 2 × 2
    /// sums when upsampled) agrees with im2col's adjoint by matrix products to rounding. Each value is
    /// a sum of K = 9·cout products taken in two orders, so the two differ by at most 2·γ_K·S with
    /// γ_K = K·u/(1 − K·u), u = 2⁻²⁴, and S the sum of the products' magnitudes (the same adjoint of
    /// |dy| by |W|, times 1 + γ_K for its own rounding). Every value of every image is checked, so
    /// none may be skipped or written twice.
    #[test]
    fn direct_adjoint_agrees_with_the_gemm_adjoint() {
        if !direct_here() {
            return;
        }
        let mut normal = normals(4);
        // (cin, cout, h, w, up, images, images per product)
        let shapes = [(16, 16, 28, 28, false, 2, 1), (64, 32, 14, 14, false, 5, 5), (32, 32, 7, 7, true, 4, 4), (24, 20, 15, 14, false, 3, 2), (16, 1, 28, 28, false, 2, 1), (64, 256, 14, 14, false, 2, 2)];
        for (cin, cout, h, w, up, n, g) in shapes {
            let wt = normal(cout * cin * 9, (1.0 / (9.0 * cin as f64)).sqrt());
            let conv_of = |wt: Vec<f32>| {
                let weight = Tensor::from_vec(wt, (cout, cin, 3, 3), &Device::Cpu).unwrap();
                Conv::from_candle(&Conv2d::new(weight, None, Conv2dConfig { padding: 1, ..Default::default() }), [1; 4]).unwrap()
            };
            let conv = conv_of(wt.clone());
            let abs = conv_of(wt.iter().map(|v| v.abs()).collect());
            let (oh, ow) = conv.out_hw(h, w, up);
            let dys: Vec<Vec<f32>> = (0..n).map(|_| normal(cout * oh * ow, 1.0)).collect();
            let ady: Vec<Vec<f32>> = dys.iter().map(|d| d.iter().map(|v| v.abs()).collect()).collect();
            let (mut col, mut f1, mut f2, mut f3) = (Vec::new(), 0, 0, 0);
            let got = conv.backward_many_as(Lowering::Direct, &dys, h, w, up, g, &mut col, &mut f1);
            let want = conv.backward_many_gemm(&dys, h, w, up, g, &mut col, &mut f2);
            let mag = abs.backward_many_gemm(&ady, h, w, up, g, &mut col, &mut f3);
            assert_eq!(f1, f2, "flop counts");
            let k = (9 * cout * if up { 4 } else { 1 }) as f64;
            let u = f64::powi(2.0, -24);
            let gamma = k * u / (1.0 - k * u);
            for (i, ((a, b), s)) in got.iter().zip(&want).zip(&mag).enumerate() {
                assert_eq!(a.len(), b.len());
                for (j, ((&x, &y), &m)) in a.iter().zip(b).zip(s).enumerate() {
                    let bound = 2.0 * gamma * m as f64 * (1.0 + gamma);
                    assert!(((x - y) as f64).abs() <= bound, "{cin}→{cout} {h}×{w} up={up}, image {i}, value {j}: {x} against {y} (bound {bound:e})");
                }
            }
        }
    }
}
