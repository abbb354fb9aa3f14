//! `e^x` for the CPU kernels' softmax and activations, written so that a loop of it
//! vectorises (the attention's softmax, SiLU): libm's `expf` is a call per value.

/// `e^x` for `x <= 0` (Cephes' `expf`: range reduction by ln 2 in two parts, a degree-5
/// polynomial, the power of two built in the exponent bits), written so that it vectorises.
/// Below -87.3 it returns ~1e-38 instead of 0, which a softmax does not see; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp1(x: f32) -> f32 {
    exp_poly::<false>(x)
}

/// [`exp1`] with fused multiply-adds, for code built with FMA (AVX2 + FMA, AVX-512): the
/// compiler does not fuse `a * b + c` itself, and on CPUs without FMA `mul_add` is a libm
/// call. Within the same 2 ulp of libm's `expf`.
#[inline(always)]
pub(crate) fn exp1_fma(x: f32) -> f32 {
    exp_poly::<true>(x)
}

/// `a·b + c`, fused with `FMA`.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn exp_poly<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Rounds to the nearest integer with adds only (1.5·2^23), so that it vectorises.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.3 { -87.3 } else { x };
    let n = madd::<FMA>(x, LOG2E, ROUND) - ROUND;
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 0.5);
    let y = madd::<FMA>(p * r, r, r) + 1.0;
    // 2^n from the bits of n + 127 + 2^23 (whose low mantissa bits hold n + 127): bit
    // casts and integer ops only, where `n as i32` (saturating) would not vectorise.
    let biased = (n + (127.0 + 8_388_608.0)).to_bits() & 0x7f_ffff;
    y * f32::from_bits(biased << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_libms_within_2_ulp_and_keeps_nan() {
        let mut x = 0.0f32;
        while x > -87.0 {
            let want = x.exp();
            for got in [exp1(x), exp1_fma(x)] {
                assert!(
                    (got - want).abs() <= 2.0 * f32::EPSILON * want,
                    "exp({x}) = {got}, libm {want}"
                );
            }
            x -= 0.001_37;
        }
        for exp in [exp1, exp1_fma] {
            assert!(exp(f32::NAN).is_nan());
            assert!(exp(-1000.0) < 1e-37);
        }
    }
}
