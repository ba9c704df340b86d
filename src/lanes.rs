//! Reductions over f64 slices in four independent lanes. A plain left-to-right `sum` is one serial chain
//! of additions that the compiler may not reorder, so it neither vectorises nor pipelines; four lanes
//! (element j goes to lane j mod 4, the lanes combined as (l0 + l1) + (l2 + l3), then the tail in order)
//! let it use SIMD registers. The order of additions is fixed by this definition, so results do not
//! depend on the machine or the thread count. No fused multiply-add is used (Rust never contracts
//! `a * b + c`), so every target gives the same bits.

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

/// Σ_j a_j b_j c_j.
#[inline]
pub fn dot3(a: &[f64], b: &[f64], c: &[f64]) -> f64 {
    reduce3(a, b, c, |x, y, z| x * y * z)
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

#[cfg(test)]
mod tests {
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
            assert_eq!(dot3(&a, &b, &c), exact(&|j| a[j] * b[j] * c[j]));
            assert_eq!(weighted_dist2(&a, &b, &c), exact(&|j| (a[j] - b[j]).powi(2) * c[j]));
        }
        assert!(all_finite(&[f64::MAX, f64::MAX, -f64::MAX, 1.0, 2.0]));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for at in 0..6 {
                let mut v = vec![1.0; 6];
                v[at] = bad;
                assert!(!all_finite(&v), "{bad} at {at}");
            }
        }
    }
}
