//! The [`Signature`] type, a leaf every other module can use: 32 bytes,
//! their hex form, and the digest of tagged bytes; and the canonical serde
//! form that keys resources and declared state.

use std::fmt;

use arrow_array::Array;

/// A 32-byte content signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Signature(pub [u8; 32]);

impl Signature {
    /// The signatures of a `FixedSizeBinary(32)` column without nulls (the
    /// layout of signature and hash columns), read in place: no copy. `None`
    /// for any other column.
    pub fn slice_of(column: &arrow_array::FixedSizeBinaryArray) -> Option<&[Signature]> {
        if column.value_length() != 32 || column.null_count() > 0 {
            return None;
        }
        let (sigs, rest) = column.value_data().as_chunks::<32>();
        if !rest.is_empty() || sigs.len() != column.len() {
            return None;
        }
        // SAFETY: `Signature` is `repr(transparent)` over `[u8; 32]`: a
        // slice of one is a valid slice of the other, of the same length
        // and alignment (1).
        Some(unsafe { std::slice::from_raw_parts(sigs.as_ptr().cast::<Signature>(), sigs.len()) })
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex characters.
    pub fn from_hex(hex: &str) -> Option<Signature> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Signature(out))
    }

    /// The signature of arbitrary bytes under a domain tag.
    pub fn of_bytes(tag: &str, bytes: &[u8]) -> Signature {
        let mut h = blake3::Hasher::new();
        h.update(tag.as_bytes());
        h.update(&[0]);
        h.update(bytes);
        Signature(*h.finalize().as_bytes())
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", &self.to_hex()[..16])
    }
}

/// The canonical serde form of `value`: its JSON with every object's keys
/// sorted (so a `HashMap` gives the same bytes whatever its iteration
/// order), without whitespace. `None` when the value cannot be represented
/// as JSON (a map with keys that are not strings or numbers, say).
pub fn canonical_json<T: serde::Serialize + ?Sized>(value: &T) -> Option<Vec<u8>> {
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) -> Option<()> {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (k, (key, value)) in entries.into_iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key).ok()?;
                    out.push(b':');
                    write(value, out)?;
                }
                out.push(b'}');
            }
            serde_json::Value::Array(items) => {
                out.push(b'[');
                for (k, item) in items.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    write(item, out)?;
                }
                out.push(b']');
            }
            leaf => serde_json::to_writer(&mut *out, leaf).ok()?,
        }
        Some(())
    }
    let tree = serde_json::to_value(value).ok()?;
    let mut out = Vec::new();
    write(&tree, &mut out)?;
    Some(out)
}
