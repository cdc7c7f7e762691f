//! The protobuf wire format, just enough to read any message as a list of raw fields and to write
//! fields back.
//!
//! Reading never copies and never allocates from a length read from the file: a length-delimited
//! field is a sub-slice of the input, checked against the bytes that remain. Groups (wire types 3
//! and 4, deprecated since proto2 and unused by ONNX) are rejected.

/// A field's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: bytes, a string, a sub-message or a packed repeated field.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

/// One field of a message: its number, payload, and its exact encoding (key included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// The field number.
    pub number: u32,
    /// The payload.
    pub value: Value<'a>,
    /// The field's bytes as they appear in the message, key included.
    pub raw: &'a [u8],
}

impl<'a> Field<'a> {
    /// The payload of a length-delimited field.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// The payload of a varint field.
    pub fn varint(&self) -> Option<u64> {
        match self.value {
            Value::Varint(v) => Some(v),
            _ => None,
        }
    }
}

/// Where and why the bytes are not a valid protobuf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError {
    /// Byte offset in the message being parsed.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid protobuf at byte {}: {}", self.offset, self.reason)
    }
}

/// Reads a varint at `*pos`, advancing it.
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let start = *pos;
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos) else {
            return Err(WireError { offset: start, reason: "truncated varint".to_string() });
        };
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(WireError { offset: start, reason: "varint longer than 64 bits".to_string() });
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError { offset: start, reason: "varint longer than 10 bytes".to_string() })
}

/// Parses a whole message into its fields, in order.
pub(crate) fn parse(buf: &[u8]) -> Result<Vec<Field<'_>>, WireError> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let key = read_varint(buf, &mut pos)?;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(WireError { offset: start, reason: format!("field number {number} is out of range") });
        }
        let number = number as u32;
        let take = |pos: &mut usize, n: usize, what: &str| -> Result<&[u8], WireError> {
            let end = pos.checked_add(n).filter(|&e| e <= buf.len()).ok_or_else(|| WireError {
                offset: start,
                reason: format!(
                    "field {number}: {what} of {n} bytes runs past the end ({} bytes left)",
                    buf.len() - *pos
                ),
            })?;
            let s = &buf[*pos..end];
            *pos = end;
            Ok(s)
        };
        let value = match key & 7 {
            0 => Value::Varint(read_varint(buf, &mut pos)?),
            1 => {
                let b = take(&mut pos, 8, "fixed64")?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len = read_varint(buf, &mut pos)?;
                let len = usize::try_from(len).map_err(|_| WireError {
                    offset: start,
                    reason: format!("field {number}: length {len} is too large"),
                })?;
                Value::Bytes(take(&mut pos, len, "length-delimited payload")?)
            }
            5 => {
                let b = take(&mut pos, 4, "fixed32")?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Value::Fixed32(u32::from_le_bytes(a))
            }
            3 | 4 => {
                return Err(WireError { offset: start, reason: format!("field {number}: groups are not supported") })
            }
            t => return Err(WireError { offset: start, reason: format!("field {number}: unknown wire type {t}") }),
        };
        fields.push(Field { number, value, raw: &buf[start..pos] });
    }
    Ok(fields)
}

/// Decodes the values of a repeated varint field (packed or not) into `out`.
pub(crate) fn repeated_varints(field: &Field<'_>, out: &mut Vec<u64>) -> Result<(), WireError> {
    match field.value {
        Value::Varint(v) => out.push(v),
        Value::Bytes(b) => {
            let mut pos = 0;
            while pos < b.len() {
                out.push(read_varint(b, &mut pos)?);
            }
        }
        _ => {
            return Err(WireError {
                offset: 0,
                reason: format!("field {}: expected a varint or packed varints", field.number),
            })
        }
    }
    Ok(())
}

/// Appends a varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field.
pub(crate) fn put_bytes(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Appends a varint field (`int64` values are written as their two's complement).
pub(crate) fn put_uint(out: &mut Vec<u8>, number: u32, v: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX, (-1i64) as u64] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut pos = 0;
            assert_eq!(read_varint(&b, &mut pos).unwrap(), v);
            assert_eq!(pos, b.len());
        }
    }

    #[test]
    fn fields_keep_their_bytes() {
        let mut b = Vec::new();
        put_uint(&mut b, 1, 7);
        put_bytes(&mut b, 999, b"abc");
        b.extend_from_slice(&[(3 << 3) | 5, 1, 2, 3, 4]);
        b.extend_from_slice(&[(4 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        let f = parse(&b).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[1].bytes(), Some(&b"abc"[..]));
        assert_eq!(f.iter().flat_map(|f| f.raw.iter().copied()).collect::<Vec<_>>(), b);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(parse(&[0x0a, 5, 1]).is_err()); // length past the end
        assert!(parse(&[0x0b]).is_err()); // group
        assert!(parse(&[0x08]).is_err()); // truncated varint
        assert!(parse(&[0x00, 0]).is_err()); // field 0
        assert!(parse(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
    }
}
