//! diffusers' attention block on one image as matrix products, the softmax vectorised, and its backward
//! pass (the probabilities recomputed from the kept projections).

use super::{gemm, Grads, Lin, Norm};
use super::exp_fma;

/// diffusers' `Attention` on an image: group norm, q/k/v projections, softmax(q kᵀ/√d) v per head, the
/// output projection, the residual, and division by `rescale`.
#[derive(Clone, Debug)]
pub struct SelfAttention {
    /// The group norm (none in a scale_shift mid block without `attn_norm_num_groups`).
    pub norm: Option<Norm>,
    /// Query, key, value and output projections.
    pub q: Lin,
    pub k: Lin,
    pub v: Lin,
    pub out: Lin,
    /// Number of heads.
    pub heads: usize,
    /// The residual's divisor.
    pub rescale: f32,
}

/// What [`SelfAttention::backward`] needs of a forward pass: its input, the norm's statistics and the
/// projections.
pub struct AttnRec {
    x: Vec<f32>,
    stats: Vec<(f64, f64)>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// The heads' output before the output projection.
    o: Vec<f32>,
}

impl SelfAttention {
    /// The block on `x` [C, L].
    pub fn forward(&self, x: &[f32], l: usize, flops: &mut u64) -> Vec<f32> {
        self.forward_rec(x, l, flops).0
    }

    /// [`Self::forward`], and what the backward pass needs.
    pub fn forward_rec(&self, x: &[f32], l: usize, flops: &mut u64) -> (Vec<f32>, AttnRec) {
        let c = self.q.out_dim();
        let (hn, stats) = match &self.norm {
            Some(n) => {
                let st = n.stats(x, l, None);
                (n.apply_with(x, l, &st, None, None, None), st)
            }
            None => (x.to_vec(), Vec::new()),
        };
        let (q, k, v) = (self.q.cols(&hn, l, flops), self.k.cols(&hn, l, flops), self.v.cols(&hn, l, flops));
        let dh = c / self.heads;
        let mut o = vec![0.0f32; c * l];
        let mut s = vec![0.0f32; l * l + super::direct::PV_SLACK];
        for h in 0..self.heads {
            let off = h * dh * l;
            // o[a, i] = Σ_j v[a, j] P[i, j]. With P stored transposed (rows j) gemm reads it without
            // copying it first; gemm sums products of at most 16 × 16 outputs another way when given the
            // row layout, so those keep it (same bits either way: tested).
            if transposed_pv(dh, l) {
                self.probabilities_t(&q[off..], &k[off..], dh, l, &mut s);
                #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
                if super::direct::available() {
                    super::direct::pv(&v[off..], l, &s, dh, l, &mut o[off..]);
                    *flops += 4 * (l * l * dh) as u64;
                    continue;
                }
                gemm(dh, l, l, &mut o[off..], l, false, &v[off..], l, 1, &s, l, 1, 1.0);
            } else {
                self.probabilities(&q[off..], &k[off..], dh, l, &mut s);
                gemm(dh, l, l, &mut o[off..], l, false, &v[off..], l, 1, &s, 1, l, 1.0);
            }
            *flops += 4 * (l * l * dh) as u64;
        }
        let mut y = self.out.cols(&o, l, flops);
        let r = 1.0 / self.rescale;
        y.iter_mut().zip(x).for_each(|(y, &xv)| *y = (*y + xv) * r);
        (y, AttnRec { x: x.to_vec(), stats, q, k, v, o })
    }

    /// P[i, j] = softmax_j(Σ_a q[a, i] k[a, j] / √dh) for one head (q, k: [dh, L] at row stride L).
    fn probabilities(&self, q: &[f32], k: &[f32], dh: usize, l: usize, p: &mut [f32]) {
        let scale = 1.0 / (dh as f32).sqrt();
        gemm(l, l, dh, p, l, false, q, 1, l, k, l, 1, scale);
        p[..l * l].chunks_mut(l).for_each(softmax);
    }

    /// Pᵀ[j, i] = P[i, j] of [`Self::probabilities`], with its bits: the scores computed as K Qᵀ (the
    /// same products summed in the same order) and the softmax run down the columns with the row
    /// softmax's lanes and order ([`softmax_cols`]).
    fn probabilities_t(&self, q: &[f32], k: &[f32], dh: usize, l: usize, pt: &mut [f32]) {
        let scale = 1.0 / (dh as f32).sqrt();
        gemm(l, l, dh, pt, l, false, k, 1, l, q, l, 1, scale);
        softmax_cols(pt, l);
    }

    /// The gradient with respect to x of Σ dy · [`Self::forward`] at x, from the forward's record; the
    /// parameters' gradients go into `grads` when given.
    pub fn backward(&self, rec: &AttnRec, dy: &[f32], l: usize, flops: &mut u64, mut grads: Option<&mut Grads>) -> Vec<f32> {
        let c = self.q.out_dim();
        let dh = c / self.heads;
        let scale = 1.0 / (dh as f32).sqrt();
        let r = 1.0 / self.rescale;
        let dyr: Vec<f32> = dy.iter().map(|&d| d * r).collect();
        // dO = Woᵀ dy/r; then per head dV = dO P, dP = dOᵀ V, dS = P ⊙ (dP − rowsum(P ⊙ dP)),
        // dQ = scale · K dSᵀ, dK = scale · Q dS.
        let mut d_o = vec![0.0f32; c * l];
        self.out.cols_t_acc(&dyr, l, &mut d_o, flops);
        let (mut dq, mut dk, mut dv) = (vec![0.0f32; c * l], vec![0.0f32; c * l], vec![0.0f32; c * l]);
        let mut p = vec![0.0f32; l * l];
        let mut dp = vec![0.0f32; l * l];
        for h in 0..self.heads {
            let off = h * dh * l;
            self.probabilities(&rec.q[off..], &rec.k[off..], dh, l, &mut p);
            gemm(dh, l, l, &mut dv[off..], l, false, &d_o[off..], l, 1, &p, l, 1, 1.0);
            gemm(l, l, dh, &mut dp, l, false, &d_o[off..], 1, l, &rec.v[off..], l, 1, 1.0);
            for (pr, dr) in p.chunks(l).zip(dp.chunks_mut(l)) {
                let dot = dot(pr, dr);
                dr.iter_mut().zip(pr).for_each(|(d, &pv)| *d = pv * (*d - dot));
            }
            gemm(dh, l, l, &mut dq[off..], l, false, &rec.k[off..], l, 1, &dp, 1, l, scale);
            gemm(dh, l, l, &mut dk[off..], l, false, &rec.q[off..], l, 1, &dp, l, 1, scale);
            *flops += 10 * (l * l * dh) as u64;
        }
        let mut dhn = vec![0.0f32; c * l];
        self.q.cols_t_acc(&dq, l, &mut dhn, flops);
        self.k.cols_t_acc(&dk, l, &mut dhn, flops);
        self.v.cols_t_acc(&dv, l, &mut dhn, flops);
        if let Some(g) = grads.as_deref_mut() {
            let hn = match &self.norm {
                Some(n) => n.apply_with(&rec.x, l, &rec.stats, None, None, None),
                None => rec.x.clone(),
            };
            self.out.cols_weight_grads(&rec.o, &dyr, l, g, flops);
            for (lin, d) in [(&self.q, &dq), (&self.k, &dk), (&self.v, &dv)] {
                lin.cols_weight_grads(&hn, d, l, g, flops);
            }
        }
        let mut dx = match &self.norm {
            Some(n) => n.backward_full(&rec.x, l, &rec.stats, None, None, None, &dhn, grads).dx,
            None => dhn,
        };
        dx.iter_mut().zip(&dyr).for_each(|(d, &g)| *d += g);
        dx
    }
}

widest! {
    /// [`crate::lanes::dot_f32`], built for the widest vectors the CPU has (the same bits in each: no
    /// fused multiply-adds).
    fn dot(a: &[f32], b: &[f32]) -> f32 => dot_body, dot_avx512, dot_avx2
}

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    crate::lanes::dot_f32(a, b)
}

widest! {
    /// A row of scores into softmax probabilities (max-shifted; max and sum in eight lanes).
    fn softmax(row: &mut [f32]) => softmax_body, softmax_avx512, softmax_avx2
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    let mut mx = [f32::NEG_INFINITY; 8];
    let mut it = row.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            mx[j] = if c[j] > mx[j] { c[j] } else { mx[j] };
        }
    }
    let m = it.remainder().iter().chain(&mx).fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    row.iter_mut().for_each(|v| *v = exp_fma(*v - m));
    let mut z = [0.0f32; 8];
    let mut it = row.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            z[j] += c[j];
        }
    }
    let iz = 1.0 / (it.remainder().iter().sum::<f32>() + z.iter().sum::<f32>());
    row.iter_mut().for_each(|v| *v *= iz);
}

/// Whether the forward pass forms P V from P stored transposed: where gemm 0.19 takes its main path
/// with the row layout too (more than 16 × 16 outputs and more than two terms per sum).
fn transposed_pv(dh: usize, l: usize) -> bool {
    dh * l > 16 * 16 && l > 2
}

widest! {
    /// Each column of the l × l matrix `pt` into softmax probabilities, with the bits [`softmax_body`]
    /// gives that column as a row: sixteen columns at a time ([`softmax_block`]), the last l mod 16
    /// through the row version itself.
    fn softmax_cols(pt: &mut [f32], l: usize) => softmax_cols_body, softmax_cols_avx512, softmax_cols_avx2
}

#[inline(always)]
fn softmax_cols_body(pt: &mut [f32], l: usize) {
    let mut i0 = 0;
    while i0 + 16 <= l {
        softmax_block(&mut pt[i0..], l);
        i0 += 16;
    }
    let mut col = vec![0.0f32; l];
    for i in i0..l {
        col.iter_mut().enumerate().for_each(|(j, v)| *v = pt[j * l + i]);
        softmax_body(&mut col);
        col.iter().enumerate().for_each(|(j, &v)| pt[j * l + i] = v);
    }
}

/// Sixteen columns of an l × l matrix (rows l apart, from the first element of `m`) into softmax probabilities, each with
/// the bits [`softmax_body`] gives it as a row: its eight lanes of maxima and sums, its remainder,
/// order and initial values.
#[inline(always)]
fn softmax_block(m: &mut [f32], l: usize) {
    const W: usize = 16;
    let n8 = l / 8 * 8;
    // Rows eight at a time, so that the lanes' index is a constant and they stay in registers.
    let mut mx = [[f32::NEG_INFINITY; W]; 8];
    for jb in (0..n8).step_by(8) {
        for (t, lane) in mx.iter_mut().enumerate() {
            let r = &m[(jb + t) * l..][..W];
            for c in 0..W {
                lane[c] = if r[c] > lane[c] { r[c] } else { lane[c] };
            }
        }
    }
    let mut top = [f32::NEG_INFINITY; W];
    for j in n8..l {
        let r = &m[j * l..][..W];
        for c in 0..W {
            top[c] = if r[c] > top[c] { r[c] } else { top[c] };
        }
    }
    for lane in &mx {
        for c in 0..W {
            top[c] = if lane[c] > top[c] { lane[c] } else { top[c] };
        }
    }
    let mut z = [[0.0f32; W]; 8];
    for jb in (0..n8).step_by(8) {
        for (t, lane) in z.iter_mut().enumerate() {
            let r = &mut m[(jb + t) * l..][..W];
            for c in 0..W {
                r[c] = exp_fma(r[c] - top[c]);
                lane[c] += r[c];
            }
        }
    }
    for j in n8..l {
        let r = &mut m[j * l..][..W];
        for c in 0..W {
            r[c] = exp_fma(r[c] - top[c]);
        }
    }
    let mut iz = [0.0f32; W];
    for (c, iz) in iz.iter_mut().enumerate() {
        let rem = (n8..l).map(|j| m[j * l + c]).sum::<f32>();
        *iz = 1.0 / (rem + z.iter().map(|lane| lane[c]).sum::<f32>());
    }
    for j in 0..l {
        let r = &mut m[j * l..][..W];
        for c in 0..W {
            r[c] *= iz[c];
        }
    }
}

#[cfg(test)]
mod transposed {
    use super::*;

    /// The forward pass's transposed probabilities and product give the bits of the row layout (which
    /// the backward pass keeps): Pᵀ is P transposed bit for bit, and P V by either layout is the same
    /// where the forward pass uses it, at sequence lengths with every remainder mod 16 and the head
    /// widths of the shipped networks, the diffusers-course model and DDPM-CIFAR-10.
    #[test]
    fn transposed_probabilities_and_product_give_the_row_layouts_bits() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (l, dh) in [(1usize, 8usize), (7, 8), (16, 8), (17, 4), (32, 8), (33, 8), (49, 8), (49, 16), (49, 32), (64, 32), (196, 8), (200, 16), (256, 256), (785, 8)] {
            let q = crate::nets::kernels::norm::test_values(dh * l, 11 + l as u64);
            let k = crate::nets::kernels::norm::test_values(dh * l, 29 + l as u64);
            let v = crate::nets::kernels::norm::test_values(dh * l, 41 + l as u64);
            let w = candle_core::Tensor::zeros((dh, dh), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
            let lin = Lin::from_candle(&candle_nn::Linear::new(w, None)).unwrap();
            let a = SelfAttention { norm: None, q: lin.clone(), k: lin.clone(), v: lin.clone(), out: lin, heads: 1, rescale: 1.0 };
            let (mut p, mut pt) = (vec![0.0f32; l * l], vec![0.0f32; l * l]);
            a.probabilities(&q, &k, dh, l, &mut p);
            a.probabilities_t(&q, &k, dh, l, &mut pt);
            let ptt: Vec<f32> = (0..l * l).map(|x| pt[(x % l) * l + x / l]).collect();
            assert_eq!(bits(&ptt), bits(&p), "l={l}, dh={dh}: probabilities");
            if !transposed_pv(dh, l) {
                continue;
            }
            let (mut o1, mut o2) = (vec![0.0f32; dh * l], vec![0.0f32; dh * l]);
            gemm(dh, l, l, &mut o1, l, false, &v, l, 1, &p, 1, l, 1.0);
            gemm(dh, l, l, &mut o2, l, false, &v, l, 1, &pt, l, 1, 1.0);
            assert_eq!(bits(&o2), bits(&o1), "l={l}, dh={dh}: P V");
            // The forward pass's product on the direct kernel (where it runs): the same bits.
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            if super::super::direct::available() {
                let mut o3 = vec![0.0f32; dh * l];
                let mut pts = pt.clone();
                pts.resize(l * l + super::super::direct::PV_SLACK, 0.0);
                super::super::direct::pv(&v, l, &pts, dh, l, &mut o3);
                let bad = o3.iter().zip(&o1).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                assert_eq!(bad, 0, "l={l}, dh={dh}: P V on the direct kernel, {bad} of {} values differ", o1.len());
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod builds {
    /// The baseline, AVX2 and AVX-512 builds of the softmax give the same bits (each on the CPUs that
    /// have it), at lengths with every remainder mod 16, and each row sums to 1 within f32 rounding.
    #[test]
    fn softmax_builds_give_the_same_bits() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for n in [1usize, 7, 8, 15, 16, 17, 49, 196, 785] {
            let x = crate::nets::kernels::norm::test_values(n, 3 + n as u64);
            let mut want = x.clone();
            super::softmax_body(&mut want);
            // n terms ≤ 1, each rounded once, and the reciprocal: |Σ − 1| ≤ (n + 2)·2⁻²³.
            let sum: f64 = want.iter().map(|&v| v as f64).sum();
            assert!((sum - 1.0).abs() <= (n as f64 + 2.0) * f32::EPSILON as f64, "n={n}: Σ = {sum}");
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut got = x.clone();
                // SAFETY: the CPU has AVX2 (checked just above).
                unsafe { super::softmax_avx2(&mut got) };
                assert_eq!(bits(&got), bits(&want), "AVX2, n={n}");
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut got = x.clone();
                // SAFETY: the CPU has AVX-512F (checked just above).
                unsafe { super::softmax_avx512(&mut got) };
                assert_eq!(bits(&got), bits(&want), "AVX-512, n={n}");
            }
        }
        // The column softmax: each build gives every column the row version's bits.
        for l in [1usize, 15, 16, 17, 33, 49] {
            let x = crate::nets::kernels::norm::test_values(l * l, 5 + l as u64);
            let mut want = x.clone();
            for i in 0..l {
                let mut col: Vec<f32> = (0..l).map(|j| x[j * l + i]).collect();
                super::softmax_body(&mut col);
                col.iter().enumerate().for_each(|(j, &v)| want[j * l + i] = v);
            }
            let mut got = x.clone();
            super::softmax_cols_body(&mut got, l);
            assert_eq!(bits(&got), bits(&want), "columns, baseline, l={l}");
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut got = x.clone();
                // SAFETY: the CPU has AVX2 (checked just above).
                unsafe { super::softmax_cols_avx2(&mut got, l) };
                assert_eq!(bits(&got), bits(&want), "columns, AVX2, l={l}");
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut got = x.clone();
                // SAFETY: the CPU has AVX-512F (checked just above).
                unsafe { super::softmax_cols_avx512(&mut got, l) };
                assert_eq!(bits(&got), bits(&want), "columns, AVX-512, l={l}");
            }
        }
    }
}
