//! Lowercase hex, as signatures, key secrets and their digests are written.

/// `bytes` as lowercase hex digits, two per byte.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from exactly 64 hex digits (any case); `None` for anything else.
pub fn decode_32(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |b: u8| (b as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_two_bytes_go_there_and_back_and_nothing_else_decodes() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        let text = encode(&bytes);
        assert_eq!(&text[..6], "00254a");
        assert_eq!(decode_32(text.as_bytes()), Some(bytes));
        assert_eq!(decode_32(text.to_uppercase().as_bytes()), Some(bytes));
        assert_eq!(decode_32(&text.as_bytes()[..62]), None);
        assert_eq!(decode_32(format!("g{}", &text[1..]).as_bytes()), None);
    }
}
