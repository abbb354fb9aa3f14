//! `e^x` for the CPU kernels' softmax and activations, written so that a loop of it
//! vectorises (the attention's softmax, SiLU): libm's `expf` is a call per value.

/// `e^x` for `x <= 0` (Cephes' `expf`: range reduction by ln 2 in two parts, a degree-5
/// polynomial, the power of two built in the exponent bits), written so that it vectorises.
/// Below -87.3 it returns ~1e-38 instead of 0, which a softmax does not see; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp1(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Rounds to the nearest integer with adds only (1.5·2^23), so that it vectorises.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.3 { -87.3 } else { x };
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
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
            let (got, want) = (exp1(x), x.exp());
            assert!(
                (got - want).abs() <= 2.0 * f32::EPSILON * want,
                "exp({x}) = {got}, libm {want}"
            );
            x -= 0.001_37;
        }
        assert!(exp1(f32::NAN).is_nan());
        assert!(exp1(-1000.0) < 1e-37);
    }
}
