//! Bytes eight at a time: tests on a little-endian word of a text's bytes, for the
//! decoders' scans (the JSON scanner's string bodies, the checks for control characters).
//!
//! Each test sets the high bit of the bytes it finds. The lowest bit set is exact. A
//! borrow from a byte that matched can only set bits above it, so "is any set" is exact
//! too, and so is the position of the first match.

/// 0x01 in every byte.
const ONES: u64 = 0x0101_0101_0101_0101;
/// 0x80 in every byte.
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bits of the bytes of `w` that are `c`.
#[inline(always)]
pub(crate) fn bytes_equal(w: u64, c: u8) -> u64 {
    let x = w ^ (ONES * c as u64);
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The high bits of the bytes of `w` below `n` (at most 0x80).
#[inline(always)]
pub(crate) fn bytes_below(w: u64, n: u8) -> u64 {
    debug_assert!(n <= 0x80);
    w.wrapping_sub(ONES * n as u64) & !w & HIGHS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_byte_found_is_exact_whatever_the_bytes_around_it() {
        let bytes = [0u8, 0x01, 0x1f, 0x20, b'"', b'\\', 0x7f, 0x80, 0xc2, 0xff];
        for at in 0..8 {
            for &found in &bytes {
                for &fill in &bytes {
                    let mut b = [fill; 8];
                    b[at] = found;
                    let w = u64::from_le_bytes(b);
                    for c in [b'"', b'\\', 0x7f, 0xc2, 0] {
                        let first = b.iter().position(|&x| x == c);
                        let got = bytes_equal(w, c);
                        assert_eq!((got != 0).then(|| got.trailing_zeros() as usize / 8), first, "{b:?} = {c:#x}");
                    }
                    for n in [0x20, 0x80, 1] {
                        let first = b.iter().position(|&x| x < n);
                        let got = bytes_below(w, n);
                        assert_eq!((got != 0).then(|| got.trailing_zeros() as usize / 8), first, "{b:?} < {n:#x}");
                    }
                }
            }
        }
    }
}
