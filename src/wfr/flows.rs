//! Closed-form 1-D Gaussian W, FR and WFR gradient flows toward π = N(mp, cp) (maths §9): the oracles the
//! samplers are tested against.

/// Mean and variance at time t of the Wasserstein (Langevin/OU) flow from N(m0, c0) to π = N(mp, cp), 1-D.
pub fn gaussian_w_flow(m0: f64, c0: f64, mp: f64, cp: f64, t: f64) -> (f64, f64) {
    let m = (-t / cp).exp();
    (m * m0 + (1.0 - m) * mp, cp + m * (c0 - cp) * m)
}

/// Mean and variance at time t of the pure Fisher–Rao flow (λ = 1), 1-D.
pub fn gaussian_fr_flow(m0: f64, c0: f64, mp: f64, cp: f64, t: f64) -> (f64, f64) {
    let e = (-t).exp();
    let c = 1.0 / (1.0 / cp + e * (1.0 / c0 - 1.0 / cp));
    (mp + e * c / c0 * (m0 - mp), c)
}

/// Mean and variance at time t of the WFR flow (λ = 1), 1-D. Needs `c0 != cp`.
pub fn gaussian_wfr_flow(m0: f64, c0: f64, mp: f64, cp: f64, t: f64) -> (f64, f64) {
    let gamma = 1.0 / cp + 0.5;
    let e = (gamma * t).exp();
    let gt = e * (1.0 / (c0 - cp) + 1.0 / (2.0 + cp)) * e - 1.0 / (cp + 2.0);
    let c = cp + 1.0 / gt;
    (mp + (c - cp) * (t / cp).exp() / (c0 - cp) * (m0 - mp), c)
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms_reproduce_math_notes() {
        // maths §9.5: m0 = 3, C0 = 0.25, π = N(0, 1).
        let close = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 6e-5 && (a.1 - b.1).abs() < 6e-5;
        assert!(close(gaussian_w_flow(3.0, 0.25, 0.0, 1.0, 1.0), (1.1036, 0.8985)));
        assert!(close(gaussian_fr_flow(3.0, 0.25, 0.0, 1.0, 1.0), (2.0985, 0.4754)));
        assert!(close(gaussian_wfr_flow(3.0, 0.25, 0.0, 1.0, 1.0), (0.5325, 0.9510)));
        assert!(close(gaussian_wfr_flow(3.0, 0.25, 0.0, 1.0, 2.0), (0.0732, 0.9975)));
    }
}
