//! Winograd's F(2×2, 3×3) for the same-size 3×3 convolution (stride 1, padding 1, optionally of the
//! 2× upsampled image) on AVX-512: each 2 × 2 block of outputs from a 4 × 4 block of the padded input
//! by 16 products per input and output channel instead of 36. The input blocks are transformed
//! (Bᵀ d B), the weights (G g Gᵀ), the 16 products of the transforms are 16 matrix products (the
//! direct kernel's, one tap per input channel), and the output transform (Aᵀ M A) adds the bias.
//! The sums are in another order than the im2col path's: the results agree to rounding (tested).

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
use super::direct::{kernel, placements, NC};
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
use super::norm::mapped_channel;
use super::norm::ChannelMap;

/// Whether a same-size 3×3 convolution from `cin` to `cout` channels with output rows of `ow` pixels
/// takes this path on this CPU ([`takes_on`] with [`half_width_fma`]).
pub(super) fn takes(ow: usize, cin: usize, cout: usize) -> bool {
    takes_on(half_width_fma(), ow, cin, cout)
}

/// [`takes`] on a CPU that runs 512-bit FMAs on 256-bit units (`half`) or at full width. Measured
/// against the direct kernel and im2col (`cargo run --release --example conv_lowering`, one thread):
/// the transforms cost per value what the products save per channel pair, so few channels and small
/// images stay direct. On a Zen 4 (half width) Winograd took 1.1–2.0x less time from 32 channels on
/// rows of ≥ 14 px and from 64 in and out on rows of 4–13 px. On an Ice Lake Xeon (full width, the
/// direct kernel's products twice as fast against the same transforms) it took 1.1–1.8x more time on
/// every layer of 64 channels or fewer (32 → 32 at 14×14: 832 against 508 µs; 64 → 64 at 14×14: 2573
/// against 2150) and 1.1–1.6x less from 128 channels on rows of ≥ 7 px (128 → 128 at 32×32: 34.9
/// against 43.6 ms), and lost to im2col on 4×4 rows (256 → 256: 4.4 against 3.4 ms).
fn takes_on(half: bool, ow: usize, cin: usize, cout: usize) -> bool {
    if half {
        cin >= 32 && (ow >= 14 || (ow >= 4 && cin >= 64 && cout >= 64))
    } else {
        cin >= 128 && cout >= 128 && ow >= 7
    }
}

/// Whether this CPU runs its 512-bit FMAs on 256-bit units, two passes each: AMD's family 19h (Zen 4;
/// its Zen 3 parts have no AVX-512). Intel's AVX-512 cores run them at full width; AMD's later
/// families are taken as full width too (not measured here). Read once from CPUID, so the choice
/// (and with it the bits) is fixed for a machine.
fn half_width_fma() -> bool {
    static HALF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HALF.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::__cpuid;
            // CPUID exists on every x86_64 CPU, and leaves 0 and 1 on every one.
            let (v, f) = (__cpuid(0), __cpuid(1));
            let amd = (v.ebx, v.edx, v.ecx) == (u32::from_le_bytes(*b"Auth"), u32::from_le_bytes(*b"enti"), u32::from_le_bytes(*b"cAMD"));
            let base = (f.eax >> 8) & 0xf;
            let family = if base == 0xf { base + ((f.eax >> 20) & 0xff) } else { base };
            amd && family == 0x19
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Tiles (2 × 2 output blocks) per chunk of images taken through the products together, by input
/// channels: the transformed inputs (16·cin values per tile) stay near 1 MB. Measured (one thread,
/// Zen 4): 256 channels on 8×8 images, 6959 µs per team at 64 tiles against 8386 at 192; 64 channels
/// on 14×14, 1800 at 245 against 1916 at 49.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
fn chunk_tiles(cin: usize) -> usize {
    (16384 / cin.max(1)).max(48)
}

/// The convolution of each image of `xs` ([cin, h·w]; mapped by `maps[i]` when given, then upsampled
/// 2× when `up`) by the weights `wt` [cout, cin·9] and `bias`, into new [cout, vh·vw] buffers. The
/// caller checks that the CPU has AVX-512F.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(all(target_arch = "x86_64", feature = "avx512")), allow(unused_variables))]
pub(super) fn conv3x3(xs: &[Vec<f32>], maps: Option<&[ChannelMap]>, h: usize, w: usize, up: bool, cin: usize, wt: &[f32], bias: &[f32], scratch: &mut Vec<f32>) -> Vec<Vec<f32>> {
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    // SAFETY: the caller checked that the CPU has AVX-512F.
    unsafe {
        conv3x3_avx512(xs, maps, h, w, up, cin, wt, bias, scratch)
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "avx512")))]
    unreachable!("the Winograd path runs only in builds with `avx512`")
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn conv3x3_avx512(xs: &[Vec<f32>], maps: Option<&[ChannelMap]>, h: usize, w: usize, up: bool, cin: usize, wt: &[f32], bias: &[f32], scratch: &mut Vec<f32>) -> Vec<Vec<f32>> {
    use std::arch::x86_64::*;
    let cout = bias.len();
    let (vh, vw) = if up { (2 * h, 2 * w) } else { (h, w) };
    let (th, tw) = (vh.div_ceil(2), vw.div_ceil(2));
    let t_img = th * tw;
    let per = (chunk_tiles(cin) / t_img).clamp(1, xs.len().max(1));
    let nb = cout.div_ceil(NC);
    // U[ξ][block][ci][NC] = (G g Gᵀ)[ξ], ξ = 4a + b, G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
    let mut u = vec![0.0f32; 16 * nb * cin * NC];
    for co in 0..cout {
        for ci in 0..cin {
            let g = &wt[(co * cin + ci) * 9..][..9];
            let mut t = [[0.0f32; 3]; 4];
            for j in 0..3 {
                t[0][j] = g[j];
                t[1][j] = 0.5 * (g[j] + g[3 + j] + g[6 + j]);
                t[2][j] = 0.5 * (g[j] - g[3 + j] + g[6 + j]);
                t[3][j] = g[6 + j];
            }
            for (a, ta) in t.iter().enumerate() {
                let r = [ta[0], 0.5 * (ta[0] + ta[1] + ta[2]), 0.5 * (ta[0] - ta[1] + ta[2]), ta[2]];
                for (b, &rb) in r.iter().enumerate() {
                    u[((4 * a + b) * nb + co / NC) * cin * NC + ci * NC + co % NC] = rb;
                }
            }
        }
    }
    // Phase planes of one padded channel P (P[y][x] = input[y − 1][x − 1], zero outside):
    // EE[i][j] = P[2i][2j], EO = P[2i][2j + 1], OE = P[2i + 1][2j], OO = P[2i + 1][2j + 1], rows r apart.
    let r = tw + 1;
    let plane = (th + 2) * r + 32;
    let lq = (th * r).div_ceil(16) * 16;
    let qplace = placements(lq, r, th, tw);
    let lr_max = (per * t_img).div_ceil(16) * 16;
    // Stage with slack: a tile row's last load reads up to 15 values past it.
    let (np, nv, nm, ns) = (4 * plane, 16 * cin * lr_max, 16 * cout * lr_max, 4 * cout * lr_max + 16);
    if scratch.len() < np + nv + nm + ns {
        scratch.resize(np + nv + nm + ns, 0.0);
    }
    let (pp, rest) = scratch.split_at_mut(np);
    // Only the phase planes' padding must be zero; the products' values past the tiles are never kept.
    pp.fill(0.0);
    let (vbuf, rest) = rest.split_at_mut(nv);
    let (mbuf, stage) = rest.split_at_mut(nm);
    let zero = vec![0.0f32; nb * NC];
    let mut mapped = vec![0.0f32; if maps.is_some() { h * w } else { 0 }];
    let mut outs = Vec::with_capacity(xs.len());
    for (c0, chunk) in xs.chunks(per).enumerate() {
        let tn = chunk.len() * t_img;
        let lr = tn.div_ceil(16) * 16;
        for (slot, x) in chunk.iter().enumerate() {
            let i_img = c0 * per + slot;
            for ci in 0..cin {
                let src = mapped_channel(maps, i_img, x, ci, h * w, &mut mapped);
                // Image row y is P's row y + 1: row ⌈y/2⌉ of the O planes when y is even, of the E
                // planes when odd. Even pixels x = 2j go to the ?O plane at j, odd x = 2j − 1 to the
                // ?E plane at j.
                for y in 0..vh {
                    let i = y.div_ceil(2);
                    let (pe, po) = if y % 2 == 0 { (2, 3) } else { (0, 1) };
                    let row: &[f32] = if up { &src[(y >> 1) * w..][..w] } else { &src[y * w..][..w] };
                    if up {
                        // Upsampled, pixel 2j is the source's j and pixel 2j − 1 its j − 1: the row itself
                        // in both planes, one position on in ?E.
                        pp[pe * plane + i * r + 1..][..w].copy_from_slice(row);
                        pp[po * plane + i * r..][..w].copy_from_slice(row);
                    } else {
                        let eo = pp.as_mut_ptr();
                        deinterleave(row, eo.add(po * plane + i * r), eo.add(pe * plane + i * r + 1));
                    }
                }
                // Bᵀ d B for 16 positions q = ty·r + tx at a time; the tiles' values (tx < tw) go
                // to V[ξ][ci][tile], compressed by the placements.
                let base = pp.as_ptr();
                let ld = |pl: usize, q: usize| _mm512_loadu_ps(base.add(pl * plane + q));
                for (qv, &(mask, first)) in qplace.iter().enumerate() {
                    if mask == 0 {
                        continue;
                    }
                    let q = 16 * qv;
                    let rows = [[ld(0, q), ld(1, q), ld(0, q + 1), ld(1, q + 1)], [ld(2, q), ld(3, q), ld(2, q + 1), ld(3, q + 1)], [ld(0, q + r), ld(1, q + r), ld(0, q + r + 1), ld(1, q + r + 1)], [ld(2, q + r), ld(3, q + r), ld(2, q + r + 1), ld(3, q + r + 1)]];
                    let mut t = [[_mm512_setzero_ps(); 4]; 4];
                    for j in 0..4 {
                        t[0][j] = _mm512_sub_ps(rows[0][j], rows[2][j]);
                        t[1][j] = _mm512_add_ps(rows[1][j], rows[2][j]);
                        t[2][j] = _mm512_sub_ps(rows[2][j], rows[1][j]);
                        t[3][j] = _mm512_sub_ps(rows[1][j], rows[3][j]);
                    }
                    let keep = (1u32 << mask.count_ones()).wrapping_sub(1) as u16;
                    let dst0 = vbuf.as_mut_ptr().add(ci * lr + slot * t_img + first);
                    for (i, ti) in t.iter().enumerate() {
                        let v = [_mm512_sub_ps(ti[0], ti[2]), _mm512_add_ps(ti[1], ti[2]), _mm512_sub_ps(ti[2], ti[1]), _mm512_sub_ps(ti[1], ti[3])];
                        for (j, vj) in v.iter().enumerate() {
                            _mm512_mask_storeu_ps(dst0.add((4 * i + j) * cin * lr), keep, _mm512_maskz_compress_ps(mask, *vj));
                        }
                    }
                }
            }
        }
        // The 16 products M[ξ] = U[ξ] V[ξ], [cout][lr] each.
        let offk: Vec<isize> = (0..cin).map(|k| (k * lr) as isize).collect();
        let place = placements(lr, lr, 1, lr);
        for xi in 0..16 {
            kernel(&vbuf[xi * cin * lr..], 0, &offk, &u[xi * nb * cin * NC..(xi + 1) * nb * cin * NC], &zero, cout, cin, lr, &place, lr, &mut [], mbuf.as_mut_ptr().add(xi * cout * lr));
        }
        // Aᵀ M A and the bias: the four outputs of each tile into stage[ab][co][tile], then each tile
        // row's two output rows into the images, the columns of the tiles interleaved.
        for (co, &b) in bias.iter().enumerate() {
            let bv = _mm512_set1_ps(b);
            for t0 in (0..tn).step_by(16) {
                let m = |xi: usize| _mm512_loadu_ps(mbuf.as_ptr().add((xi * cout + co) * lr + t0));
                let mut s = [[_mm512_setzero_ps(); 4]; 2];
                for j in 0..4 {
                    let (m0, m1, m2, m3) = (m(j), m(4 + j), m(8 + j), m(12 + j));
                    s[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                    s[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
                }
                for (a, sa) in s.iter().enumerate() {
                    let y0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(sa[0], sa[1]), sa[2]), bv);
                    let y1 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(sa[1], sa[2]), sa[3]), bv);
                    _mm512_storeu_ps(stage.as_mut_ptr().add(((2 * a) * cout + co) * lr + t0), y0);
                    _mm512_storeu_ps(stage.as_mut_ptr().add(((2 * a + 1) * cout + co) * lr + t0), y1);
                }
            }
        }
        let pick = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let mut ys: Vec<Vec<f32>> = chunk.iter().map(|_| Vec::with_capacity(cout * vh * vw)).collect();
        for (slot, y) in ys.iter_mut().enumerate() {
            let o = y.as_mut_ptr();
            for co in 0..cout {
                for ty in 0..th {
                    for a in 0..2 {
                        let oy = 2 * ty + a;
                        if oy >= vh {
                            continue;
                        }
                        let src = |ab: usize, tx: usize| _mm512_loadu_ps(stage.as_ptr().add((ab * cout + co) * lr + slot * t_img + ty * tw + tx));
                        for tx0 in (0..tw).step_by(8) {
                            let v = _mm512_permutex2var_ps(src(2 * a, tx0), pick, src(2 * a + 1, tx0));
                            let n = (vw - 2 * tx0).min(16);
                            _mm512_mask_storeu_ps(o.add(co * vh * vw + oy * vw + 2 * tx0), ((1u32 << n) - 1) as u16, v);
                        }
                    }
                }
            }
            // Every pixel of every channel was written just above (the tiles cover the image).
            y.set_len(cout * vh * vw);
        }
        outs.extend(ys);
    }
    outs
}

/// The even pixels of `row` to `even` (one after another) and the odd ones to `odd`.
#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
#[target_feature(enable = "avx512f")]
unsafe fn deinterleave(row: &[f32], even: *mut f32, odd: *mut f32) {
    use std::arch::x86_64::*;
    let ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let n = row.len();
    let p = row.as_ptr();
    for x0 in (0..n).step_by(32) {
        let k = (n - x0).min(32);
        let lo_m = ((1u32 << k.min(16)) - 1) as u16;
        let hi_m = if k > 16 { ((1u32 << (k - 16)) - 1) as u16 } else { 0 };
        let lo = _mm512_maskz_loadu_ps(lo_m, p.add(x0));
        let hi = _mm512_maskz_loadu_ps(hi_m, p.add(x0 + 16));
        let (ne, no) = (k.div_ceil(2), k / 2);
        _mm512_mask_storeu_ps(even.add(x0 / 2), ((1u32 << ne) - 1) as u16, _mm512_permutex2var_ps(lo, ev, hi));
        _mm512_mask_storeu_ps(odd.add(x0 / 2), ((1u32 << no) - 1) as u16, _mm512_permutex2var_ps(lo, od, hi));
    }
}

#[cfg(all(test, target_arch = "x86_64", feature = "avx512"))]
mod tests {
    use super::super::test_normals as normals;
    use super::super::{ChannelMap, Conv, Lowering};
    use crate::nets::kernels::Act;
    use candle_core::{Device, Tensor};
    use candle_nn::{Conv2d, Conv2dConfig};


    /// The 3×3 same-size convolution of x [cin, h, w] by g [cout, cin, 3, 3] plus b in f64, exactly
    /// (`exact`), and the same F(2×2, 3×3) algorithm on absolute values (|Aᵀ| (Σ_ci |G||g||Gᵀ| ⊙
    /// |Bᵀ||d||B|) |A| + |b|, `mag`): the sum of the magnitudes of every term each output's computation
    /// adds, which bounds its rounding error.
    fn reference(x: &[f32], g: &[f32], b: &[f32], cin: usize, h: usize, w: usize) -> (Vec<f64>, Vec<f64>) {
        let cout = b.len();
        let px = |c: usize, y: isize, xx: isize| if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize { 0.0 } else { x[c * h * w + y as usize * w + xx as usize] as f64 };
        let mut exact = vec![0.0f64; cout * h * w];
        for co in 0..cout {
            for y in 0..h {
                for xx in 0..w {
                    let mut s = b[co] as f64;
                    for ci in 0..cin {
                        for k in 0..9 {
                            s += g[(co * cin + ci) * 9 + k] as f64 * px(ci, y as isize + (k / 3) as isize - 1, xx as isize + (k % 3) as isize - 1);
                        }
                    }
                    exact[(co * h + y) * w + xx] = s;
                }
            }
        }
        let gm = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.0, 0.0, 1.0]];
        let bt = [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]];
        let at = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]];
        let mut mag = vec![0.0f64; cout * h * w];
        for co in 0..cout {
            for ty in 0..h.div_ceil(2) {
                for tx in 0..w.div_ceil(2) {
                    let mut m = [[0.0f64; 4]; 4];
                    for ci in 0..cin {
                        for a in 0..4 {
                            for bb in 0..4 {
                                let mut u = 0.0;
                                let mut v = 0.0;
                                for i in 0..3 {
                                    for j in 0..3 {
                                        u += gm[a][i] * (g[(co * cin + ci) * 9 + 3 * i + j] as f64).abs() * gm[bb][j];
                                    }
                                }
                                for i in 0..4 {
                                    for j in 0..4 {
                                        v += bt[a][i] * px(ci, (2 * ty + i) as isize - 1, (2 * tx + j) as isize - 1).abs() * bt[bb][j];
                                    }
                                }
                                m[a][bb] += u * v;
                            }
                        }
                    }
                    for (oa, ra) in at.iter().enumerate() {
                        for (ob, rb) in at.iter().enumerate() {
                            let (y, xx) = (2 * ty + oa, 2 * tx + ob);
                            if y < h && xx < w {
                                let s: f64 = (0..4).map(|i| (0..4).map(|j| ra[i] * m[i][j] * rb[j]).sum::<f64>()).sum();
                                mag[(co * h + y) * w + xx] = s + (b[co] as f64).abs();
                            }
                        }
                    }
                }
            }
        }
        (exact, mag)
    }

    /// γ_n = n·u/(1 − n·u), u = 2⁻²⁴.
    fn gamma(n: usize) -> f64 {
        let nu = n as f64 * f64::powi(2.0, -24);
        nu / (1.0 - nu)
    }

    /// The nearest-neighbour 2× upsampling of each channel of x [c, h, w].
    fn upsample(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
        (0..c * 4 * h * w).map(|i| {
            let (ch, y, xx) = (i / (4 * h * w), i / (2 * w) % (2 * h), i % (2 * w));
            x[ch * h * w + (y / 2) * w + xx / 2]
        })
        .collect()
    }

    /// Winograd's F(2×2, 3×3) is the convolution to rounding: every output of every image within
    /// γ_n·S of the exact (f64) value, S the sum of the magnitudes of the terms its computation adds
    /// and n = cin + 12 the longest chain of roundings behind one output (2 in the input transform,
    /// 4 in the weights', cin fused multiply-adds, 5 in the output transform and the bias). On the
    /// shipped networks' shapes, odd sizes (tiles cut by the border), upsampled inputs, inputs mapped by
    /// a norm and SiLU, and more images than one chunk holds.
    #[test]
    fn winograd_is_the_convolution_to_rounding() {
        if !super::super::direct::available() {
            eprintln!("no AVX-512F here (or the build lacks `avx512`): the Winograd path is not used, nothing to check");
            return;
        }
        let mut normal = normals(9);
        // (cin, cout, h, w, up, images, mapped)
        let shapes = [(32, 16, 28, 28, false, 2, true), (64, 64, 14, 14, false, 7, false), (32, 32, 7, 7, true, 3, true), (64, 72, 8, 8, false, 5, false), (33, 12, 9, 7, false, 3, true), (256, 16, 4, 4, false, 20, false), (16, 8, 5, 11, true, 2, false)];
        for (cin, cout, h, w, up, n, mapped) in shapes {
            let wt = normal(cout * cin * 9, (1.0 / (9.0 * cin as f64)).sqrt());
            let bias = normal(cout, 0.1);
            let weight = Tensor::from_vec(wt.clone(), (cout, cin, 3, 3), &Device::Cpu).unwrap();
            let b = Tensor::from_vec(bias.clone(), cout, &Device::Cpu).unwrap();
            let conv = Conv::from_candle(&Conv2d::new(weight, Some(b), Conv2dConfig { padding: 1, ..Default::default() }), [1; 4]).unwrap();
            let xs: Vec<Vec<f32>> = (0..n).map(|_| normal(cin * h * w, 1.0)).collect();
            let maps: Vec<ChannelMap> = (0..n).map(|_| ChannelMap { maps: normal(2 * cin, 0.7).chunks(2).map(|c| (c[0], c[1])).collect(), act: Some(Act::Silu) }).collect();
            let (mut col, mut f1) = (Vec::new(), 0);
            let (got, oh, ow) = conv.forward_many_as(Lowering::Winograd, &xs, mapped.then_some(&maps[..]), h, w, up, 4, &mut col, &mut f1);
            assert_eq!(got.len(), n);
            let nbound = gamma(cin + 12);
            for (i, (x, y)) in xs.iter().zip(&got).enumerate() {
                let x = if mapped { maps[i].apply(x, h * w) } else { x.clone() };
                let x = if up { upsample(&x, cin, h, w) } else { x };
                let (exact, mag) = reference(&x, &wt, &bias, cin, oh, ow);
                assert_eq!(y.len(), exact.len());
                for (j, ((&v, &e), &s)) in y.iter().zip(&exact).zip(&mag).enumerate() {
                    assert!((v as f64 - e).abs() <= nbound * s, "{cin}→{cout} {h}×{w} up={up}, image {i}, value {j}: {v} against {e} (bound {:e})", nbound * s);
                }
            }
        }
    }

    /// The adjoint by Winograd's F(2×2, 3×3) (the convolution by the flipped, transposed weights on
    /// the output gradients, then the 2 × 2 sums when upsampled) is the exact adjoint to rounding:
    /// within γ_n·S with n = cout + 12 (+ 3 for the 2 × 2 sums) and S as in the forward test, for the
    /// adjoint's weights and inputs.
    #[test]
    fn winograd_adjoint_is_the_adjoint_to_rounding() {
        if !super::super::direct::available() {
            eprintln!("no AVX-512F here (or the build lacks `avx512`): the Winograd path is not used, nothing to check");
            return;
        }
        let mut normal = normals(10);
        // (cin, cout, h, w, up, images)
        for (cin, cout, h, w, up, n) in [(64, 32, 14, 14, false, 3), (32, 48, 7, 7, true, 2), (40, 64, 9, 9, false, 2)] {
            let wt = normal(cout * cin * 9, (1.0 / (9.0 * cin as f64)).sqrt());
            let weight = Tensor::from_vec(wt.clone(), (cout, cin, 3, 3), &Device::Cpu).unwrap();
            let conv = Conv::from_candle(&Conv2d::new(weight, None, Conv2dConfig { padding: 1, ..Default::default() }), [1; 4]).unwrap();
            let (oh, ow) = conv.out_hw(h, w, up);
            let dys: Vec<Vec<f32>> = (0..n).map(|_| normal(cout * oh * ow, 1.0)).collect();
            let (mut col, mut f1) = (Vec::new(), 0);
            let got = conv.backward_many_as(Lowering::Winograd, &dys, h, w, up, 2, &mut col, &mut f1);
            // The adjoint's weights: W'[ci, co·9 + t] = W[co, ci·9 + 8 − t].
            let mut wa = vec![0.0f32; cin * cout * 9];
            for co in 0..cout {
                for ci in 0..cin {
                    for t in 0..9 {
                        wa[(ci * cout + co) * 9 + 8 - t] = wt[(co * cin + ci) * 9 + t];
                    }
                }
            }
            let nbound = gamma(cout + 12 + if up { 3 } else { 0 });
            for (i, (dy, g)) in dys.iter().zip(&got).enumerate() {
                let (exact, mag) = reference(dy, &wa, &vec![0.0; cin], cout, oh, ow);
                let fold = |v: &[f64]| -> Vec<f64> {
                    if !up {
                        return v.to_vec();
                    }
                    (0..cin * h * w).map(|k| {
                        let (c, y, x) = (k / (h * w), k / w % h, k % w);
                        let at = |dy: usize, dx: usize| v[(c * oh + 2 * y + dy) * ow + 2 * x + dx];
                        at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)
                    })
                    .collect()
                };
                let (exact, mag) = (fold(&exact), fold(&mag));
                assert_eq!(g.len(), exact.len());
                for (j, ((&v, &e), &s)) in g.iter().zip(&exact).zip(&mag).enumerate() {
                    assert!((v as f64 - e).abs() <= nbound * s, "{cin}→{cout} {h}×{w} up={up}, image {i}, value {j}: {v} against {e} (bound {:e})", nbound * s);
                }
            }
        }
    }
}
