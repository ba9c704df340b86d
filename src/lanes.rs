//! Reductions over f64 slices in four independent lanes. A plain left-to-right `sum` is one serial chain
//! of additions that the compiler may not reorder, so it neither vectorises nor pipelines; four lanes
//! (element j goes to lane j mod 4, the lanes combined as (l0 + l1) + (l2 + l3), then the tail in order)
//! let it use SIMD registers. The order of additions is fixed by this definition, so results do not
//! depend on the machine or the thread count. No fused multiply-add is used (Rust never contracts
//! `a * b + c`), so every target gives the same bits.
//!
//! [`exp`] and [`ln`] are our own, branch-light (so loops over them vectorise) and within 2 ulp of the
//! correctly rounded value: with them, a run's bits do not depend on the C library's `exp`/`log` either.
//! Their constants keep the digits fdlibm and Cephes publish (more than an f64 holds).
#![allow(clippy::excessive_precision)]

/// Σ_j f(a_j, b_j) in the lane order above.
#[inline(always)]
fn reduce2(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut l = [0.0f64; 4];
    for (x, y) in ca.zip(cb) {
        l[0] += f(x[0], y[0]);
        l[1] += f(x[1], y[1]);
        l[2] += f(x[2], y[2]);
        l[3] += f(x[3], y[3]);
    }
    let mut s = (l[0] + l[1]) + (l[2] + l[3]);
    for (&x, &y) in ra.iter().zip(rb) {
        s += f(x, y);
    }
    s
}

/// Σ_j f(a_j, b_j, c_j) in the lane order above.
#[inline(always)]
fn reduce3(a: &[f64], b: &[f64], c: &[f64], f: impl Fn(f64, f64, f64) -> f64) -> f64 {
    let n = a.len().min(b.len()).min(c.len());
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    let (ca, cb, cc) = (a.chunks_exact(4), b.chunks_exact(4), c.chunks_exact(4));
    let (ra, rb, rc) = (ca.remainder(), cb.remainder(), cc.remainder());
    let mut l = [0.0f64; 4];
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        l[0] += f(x[0], y[0], z[0]);
        l[1] += f(x[1], y[1], z[1]);
        l[2] += f(x[2], y[2], z[2]);
        l[3] += f(x[3], y[3], z[3]);
    }
    let mut s = (l[0] + l[1]) + (l[2] + l[3]);
    for ((&x, &y), &z) in ra.iter().zip(rb).zip(rc) {
        s += f(x, y, z);
    }
    s
}

/// a · b (over the shorter length).
#[inline]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    reduce2(a, b, |x, y| x * y)
}

/// |a|².
#[inline]
pub fn norm2(a: &[f64]) -> f64 {
    reduce2(a, a, |x, _| x * x)
}

/// Σ_j a_j.
#[inline]
pub fn sum(a: &[f64]) -> f64 {
    reduce2(a, a, |x, _| x)
}

/// |a − b|².
#[inline]
pub fn dist2(a: &[f64], b: &[f64]) -> f64 {
    reduce2(a, b, |x, y| (x - y) * (x - y))
}

/// Σ_j (x_j − m_j)² w_j: a diagonal quadratic form.
#[inline]
pub fn weighted_dist2(x: &[f64], m: &[f64], w: &[f64]) -> f64 {
    reduce3(x, m, w, |x, m, w| {
        let d = x - m;
        d * d * w
    })
}

/// Σ_j (x_j − m_j)² w_j in f32, in 16 lanes (element j to lane j mod 16; the lanes combined as a
/// balanced tree, lane i with lane i + 8, then i + 4, i + 2, i + 1; then the tail in order): two AVX2
/// registers, so the adds do not wait on one another. The order is fixed by this definition.
#[inline(always)]
pub fn weighted_dist2_f32(x: &[f32], m: &[f32], w: &[f32]) -> f32 {
    const L: usize = 16;
    let n = x.len().min(m.len()).min(w.len());
    let (x, m, w) = (&x[..n], &m[..n], &w[..n]);
    let (cx, cm, cw) = (x.chunks_exact(L), m.chunks_exact(L), w.chunks_exact(L));
    let (rx, rm, rw) = (cx.remainder(), cm.remainder(), cw.remainder());
    let mut l = [0.0f32; L];
    for ((a, b), c) in cx.zip(cm).zip(cw) {
        for i in 0..L {
            let d = a[i] - b[i];
            l[i] += d * d * c[i];
        }
    }
    let mut width = L / 2;
    while width > 0 {
        for i in 0..width {
            l[i] += l[i + width];
        }
        width /= 2;
    }
    let mut s = l[0];
    for ((&a, &b), &c) in rx.iter().zip(rm).zip(rw) {
        let d = a - b;
        s += d * d * c;
    }
    s
}

/// a · b in f32 (over the shorter length), in the 16 lanes and order of [`weighted_dist2_f32`].
#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut l = [0.0f32; L];
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            l[i] += x[i] * y[i];
        }
    }
    let mut width = L / 2;
    while width > 0 {
        for i in 0..width {
            l[i] += l[i + width];
        }
        width /= 2;
    }
    let mut s = l[0];
    for (&x, &y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Whether every value is finite (a NaN or ±∞ anywhere makes Σ 0·v NaN; finite values add exact zeros,
/// so large finite values cannot overflow it).
#[inline]
pub fn all_finite(a: &[f64]) -> bool {
    sum_zeroed(a) == 0.0
}

#[inline]
fn sum_zeroed(a: &[f64]) -> f64 {
    reduce2(a, a, |x, _| x * 0.0)
}

/// 1.5·2⁵²: adding and subtracting it rounds an f64 of magnitude < 2⁵¹ to the nearest integer.
const ROUND: f64 = 6_755_399_441_055_744.0;
const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;

/// 2^k for an integer k in [−1022, 1023].
#[inline(always)]
fn pow2(k: i64) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// 2^(j/64), j = 0..63, correctly rounded (computed to 60 digits; entry 32 is √2).
#[allow(clippy::approx_constant)]
const EXP2_TABLE: [f64; 64] = [
    1.0,
    1.0108892860517005,
    1.0218971486541166,
    1.0330248790212284,
    1.0442737824274138,
    1.0556451783605572,
    1.0671404006768237,
    1.0787607977571199,
    1.0905077326652577,
    1.102382583307841,
    1.1143867425958924,
    1.1265216186082418,
    1.1387886347566916,
    1.1511892299529827,
    1.1637248587775775,
    1.1763969916502812,
    1.189207115002721,
    1.202156731452703,
    1.215247359980469,
    1.22848053610687,
    1.241857812073484,
    1.255380757024691,
    1.2690509571917332,
    1.2828700160787783,
    1.2968395546510096,
    1.3109612115247644,
    1.3252366431597413,
    1.339667524053303,
    1.3542555469368927,
    1.3690024229745905,
    1.383909881963832,
    1.3989796725383112,
    1.4142135623730951,
    1.42961333839197,
    1.4451808069770467,
    1.460917794180647,
    1.4768261459394993,
    1.4929077282912648,
    1.5091644275934228,
    1.5255981507445384,
    1.5422108254079407,
    1.559004400237837,
    1.5759808451078865,
    1.593142151342267,
    1.6104903319492543,
    1.6280274218573478,
    1.645755478153965,
    1.6636765803267364,
    1.681792830507429,
    1.7001063537185235,
    1.718619298122478,
    1.7373338352737062,
    1.7562521603732995,
    1.7753764925265212,
    1.7947090750031072,
    1.8142521755003989,
    1.8340080864093424,
    1.8539791250833855,
    1.8741676341103,
    1.8945759815869656,
    1.9152065613971474,
    1.9360617934922943,
    1.9571441241754002,
    1.978456026387951,
];

/// 64 / ln 2, and ln 2 / 64 split in a head with 32 trailing zero bits (so k·head is exact) and a tail.
const INV_LN2_64: f64 = 92.332_482_616_893_66;
const LN2_64_HI: f64 = 0.010_830_417_275_428_772;
const LN2_64_LO: f64 = 7.420_820_373_486_988e-9;

/// e^x within 2 ulp (measured: 1 ulp from glibc): x = (64m + j) ln2/64 + r with |r| ≤ ln2/128, so
/// e^x = 2^m · 2^(j/64) · e^r, with 2^(j/64) from a table of 64 correctly rounded values and e^r − 1
/// by its Taylor series to r⁶ (the remainder is below 10⁻¹⁹); the scaling by 2^m is done in two
/// halves so that subnormal results and overflow come out right. exp(−∞) = 0, exp(+∞) = +∞,
/// exp(NaN) = NaN.
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    let xc = x.clamp(-746.0, 710.0);
    let kf = (xc * INV_LN2_64 + ROUND) - ROUND;
    let r = (xc - kf * LN2_64_HI) - kf * LN2_64_LO;
    let p = r + r * r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0)))));
    let k = kf as i64;
    let t = EXP2_TABLE[(k & 63) as usize];
    let m = k >> 6;
    let m1 = m >> 1;
    let v = (t + t * p) * pow2(m1) * pow2(m - m1);
    if x.is_nan() {
        x
    } else {
        v
    }
}

/// ln x within 2 ulp (fdlibm's method: x = 2^e·m with m in [√½, √2), f = m − 1, s = f/(2 + f),
/// ln m = f − f²/2 + s (f²/2 + R(s²)) with fdlibm's minimax R). ln 0 = −∞, ln of a negative number or
/// NaN is NaN, ln(+∞) = +∞; subnormals are scaled first.
#[inline(always)]
pub fn ln(x: f64) -> f64 {
    const LG: [f64; 7] = [
        6.666_666_666_666_735_130e-01,
        3.999_999_999_940_941_908e-01,
        2.857_142_874_366_239_149e-01,
        2.222_219_843_214_978_396e-01,
        1.818_357_216_161_805_012e-01,
        1.531_383_769_920_937_332e-01,
        1.479_819_860_511_658_591e-01,
    ];
    if !(x > 0.0 && x < f64::INFINITY) {
        return if x == 0.0 { f64::NEG_INFINITY } else if x == f64::INFINITY { x } else { f64::NAN };
    }
    let (x, e0) = if x < f64::MIN_POSITIVE { (x * 18_014_398_509_481_984.0, -54i64) } else { (x, 0) };
    let bits = x.to_bits();
    // The exponent such that the mantissa m = x / 2^e lies in [√½, √2).
    let hi = bits + (0x3ff0_0000_0000_0000 - 0x3fe6_a09e_0000_0000);
    let e = ((hi >> 52) as i64 - 1023 + e0) as f64;
    let m = f64::from_bits(((hi & 0x000f_ffff_ffff_ffff) + 0x3fe6_a09e_0000_0000) | (bits & 0xffff_ffff));
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG[1] + w * (LG[3] + w * LG[5]));
    let t2 = z * (LG[0] + w * (LG[2] + w * (LG[4] + w * LG[6])));
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    e * LN2_HI - ((hfsq - (s * (hfsq + r) + e * LN2_LO)) - f)
}

/// e^x in f32 within 1 ulp (of the correctly rounded value) for x in [−87, 88] (inputs outside are clamped there: e^x is then 1.6e−38
/// or 1.7e38 instead of 0 or +∞, which no caller can tell apart); NaN stays NaN. Branch-free, so that
/// loops over slices vectorise: k = round(x / ln 2) by the 1.5·2²³ trick, r = x − k ln 2 in two parts,
/// Cephes' degree-7 minimax polynomial on |r| ≤ ln2/2, and 2^k built from its bits.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let kf = t - MAGIC;
    let k = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    // Cephes' expf: ln 2 = C1 + C2 with C1 exact in 9 bits (k·C1 is exact), and its minimax polynomial.
    let r = (xc - kf * 0.693_359_375) - kf * -2.121_944_4e-4;
    let p = 1.0 + r + r * r * (0.5 + r * (1.666_666_5e-1 + r * (4.166_579_6e-2 + r * (8.333_452e-3 + r * (1.398_2e-3 + r * 1.987_569_1e-4)))));
    p * f32::from_bits(((k + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {

    #[test]
    fn exp_f32_within_one_ulp_of_f64_exp() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let want = (x as f64).exp();
            let got = super::exp_f32(x) as f64;
            let ulp = (want as f32).to_bits() as i64 - (got as f32).to_bits() as i64;
            worst = worst.max((ulp.abs()) as f64);
        }
        assert!(worst <= 1.0, "worst {worst} ulp");
        assert!(super::exp_f32(f32::NAN).is_nan());
        assert!(super::exp_f32(-1e4) < 2e-38 && super::exp_f32(1e4) > 1e38);
    }
    use super::*;

    /// The lane sums agree with exact (integer-valued, so exactly representable) sums at every length
    /// 0..=11 (every remainder), and the finiteness test catches NaN and ±∞ and accepts f64::MAX.
    #[test]
    fn lanes_agree_with_exact_sums() {
        for n in 0..=11usize {
            let a: Vec<f64> = (0..n).map(|j| j as f64 + 1.0).collect();
            let b: Vec<f64> = (0..n).map(|j| 2.0 - j as f64).collect();
            let c: Vec<f64> = (0..n).map(|j| (j % 3) as f64).collect();
            let exact = |f: &dyn Fn(usize) -> f64| (0..n).map(f).sum::<f64>();
            assert_eq!(dot(&a, &b), exact(&|j| a[j] * b[j]));
            assert_eq!(norm2(&a), exact(&|j| a[j] * a[j]));
            assert_eq!(sum(&b), exact(&|j| b[j]));
            assert_eq!(dist2(&a, &b), exact(&|j| (a[j] - b[j]).powi(2)));
            assert_eq!(weighted_dist2(&a, &b, &c), exact(&|j| (a[j] - b[j]).powi(2) * c[j]));
        }
        // The f32 dot product at lengths with every remainder mod 16 (integer values: exact in f32).
        for n in 0..=40usize {
            let a: Vec<f32> = (0..n).map(|j| j as f32 + 1.0).collect();
            let b: Vec<f32> = (0..n).map(|j| 2.0 - (j % 7) as f32).collect();
            assert_eq!(dot_f32(&a, &b) as f64, (0..n).map(|j| a[j] as f64 * b[j] as f64).sum::<f64>(), "n={n}");
        }
        assert!(all_finite(&[f64::MAX, f64::MAX, -f64::MAX, 1.0, 2.0]));
    }

    /// Distance in units in the last place between two finite f64 of the same sign.
    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    /// exp and ln within 2 ulp of the C library's (itself within 1 ulp of the truth) over their whole
    /// ranges, exact where the value is exact, and right at the edges.
    #[test]
    fn exp_and_ln_are_within_two_ulp() {
        let mut worst = (0u64, 0u64);
        let mut x = -745.0;
        while x < 709.7 {
            for dx in [0.0, 1e-9, 0.31, 0.5 * std::f64::consts::LN_2] {
                let v = x + dx;
                let (a, b) = (exp(v), v.exp());
                if b >= f64::MIN_POSITIVE {
                    worst.0 = worst.0.max(ulps(a, b));
                } else {
                    assert!((a - b).abs() <= 2.0 * 4.9e-324, "subnormal exp({v}) = {a} vs {b}");
                }
            }
            x += 0.173;
        }
        let mut x = 1e-310;
        while x < 1e300 {
            for f in [1.0, 1.0 + 1e-12, 1.3, std::f64::consts::SQRT_2, 1.9] {
                let v = x * f;
                if v != 1.0 {
                    worst.1 = worst.1.max(ulps(ln(v), v.ln()));
                }
            }
            x *= 3.7;
        }
        eprintln!("worst exp / ln difference from libm, in ulp: {worst:?}");
        assert!(worst.0 <= 2 && worst.1 <= 2, "worst exp / ln error in ulp: {worst:?}");
        for v in [0.5, 0.99, 1.01, 2.0, 10.0] {
            assert!(ulps(ln(v), v.ln()) <= 2, "ln({v})");
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(-800.0), 0.0);
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(710.0), f64::INFINITY);
        assert!(exp(f64::NAN).is_nan());
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert_eq!(ln(f64::INFINITY), f64::INFINITY);
        assert!(ln(-1.0).is_nan() && ln(f64::NAN).is_nan());
        assert!(ulps(ln(5e-324), (5e-324f64).ln()) <= 2);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for at in 0..6 {
                let mut v = vec![1.0; 6];
                v[at] = bad;
                assert!(!all_finite(&v), "{bad} at {at}");
            }
        }
    }
}
