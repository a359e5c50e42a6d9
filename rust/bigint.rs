//! Decimal text to little-endian magnitude bytes and back, for integers too long for `i64`.
//!
//! CPython's own `int(str)` and `str(int)` obey `sys.set_int_max_str_digits`, a process-wide
//! setting; turnlog's format fixes the limit at [`record::MAX_INT_DIGITS`] instead, so that a
//! line means the same in every process. These conversions are quadratic, which is fine for the
//! at most 4300 digits a valid line can hold.
//!
//! [`record::MAX_INT_DIGITS`]: crate::record::MAX_INT_DIGITS

const CHUNK: u64 = 1_000_000_000; // 10^9, the largest power of ten in a u32 limb

/// The magnitude of the unsigned decimal `digits` (ASCII digits only), as little-endian bytes.
pub fn decimal_to_le_bytes(digits: &str) -> Vec<u8> {
    let mut limbs: Vec<u32> = Vec::with_capacity(digits.len() / 9 + 1);
    let bytes = digits.as_bytes();
    let first = bytes.len() % 9;
    let mut chunks = Vec::with_capacity(bytes.len() / 9 + 1);
    if first > 0 {
        chunks.push(&bytes[..first]);
    }
    chunks.extend(bytes[first..].chunks(9));
    for chunk in chunks {
        let scale = 10u64.pow(chunk.len() as u32);
        let mut carry = chunk
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        for limb in &mut limbs {
            let value = u64::from(*limb) * scale + carry;
            *limb = value as u32;
            carry = value >> 32;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
    }
    limbs.iter().flat_map(|limb| limb.to_le_bytes()).collect()
}

/// The decimal text of the magnitude given as little-endian bytes.
pub fn le_bytes_to_decimal(bytes: &[u8]) -> String {
    let mut limbs: Vec<u32> = bytes
        .chunks(4)
        .map(|c| {
            let mut le = [0u8; 4];
            le[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(le)
        })
        .collect();
    let mut groups = Vec::new(); // base-10^9 digits, least significant first
    while limbs.last() == Some(&0) {
        limbs.pop();
    }
    while !limbs.is_empty() {
        let mut remainder = 0u64;
        for limb in limbs.iter_mut().rev() {
            let value = (remainder << 32) | u64::from(*limb);
            *limb = (value / CHUNK) as u32;
            remainder = value % CHUNK;
        }
        groups.push(remainder);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut text = groups.last().map_or_else(|| "0".to_owned(), u64::to_string);
    for group in groups.iter().rev().skip(1) {
        text.push_str(&format!("{group:09}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for digits in [
            "0",
            "1",
            "4294967296",
            "18446744073709551616",
            &"9".repeat(4300),
        ] {
            let bytes = decimal_to_le_bytes(digits);
            assert_eq!(
                le_bytes_to_decimal(&bytes),
                digits.trim_start_matches('0').max("0")
            );
        }
        assert_eq!(
            decimal_to_le_bytes("4294967296"),
            vec![0, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(le_bytes_to_decimal(&[0, 0, 0, 0, 1]), "4294967296");
        assert_eq!(le_bytes_to_decimal(&[]), "0");
    }
}
