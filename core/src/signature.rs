//! Content signatures: the 32-byte BLAKE3 digests that key cached results.
//!
//! - A value's hash is defined on its canonical Arrow encoding: the value is
//!   encoded as an Arrow array of its [`ArrowValue`](crate::ArrowValue) data
//!   type, each row is turned into `arrow-row`'s byte encoding, and the
//!   digest is BLAKE3 in keyed mode over those bytes, with a key derived
//!   from a domain tag and the data type. Any engine holding the same values
//!   in an array of that data type computes the same hashes, and hashing is
//!   batch-first: one call for a whole column.
//! - A node's signature for one item is BLAKE3 in keyed mode over its
//!   inputs' value hashes (in input order), with a key ([`NodeKey`]) derived
//!   from a domain tag, the code hash, the number of inputs and the salt. The
//!   key is computed once per node, so one item costs one short hash (a
//!   single compression for up to two inputs).
//!
//! - Columns are hashed many rows at a time: sixteen messages side by side
//!   in AVX-512 registers, or eight in AVX2 registers, when the CPU has them
//!   (`lanes`), with digests equal to the one-at-a-time `blake3` ones.
//!
//! The byte layout is versioned by the domain tags below; changing any of it
//! is a cache format change.

pub(crate) mod digest;
mod lanes;

pub use digest::{Signature, canonical_json};

use arrow_array::{Array, ArrayRef};
use arrow_row::{RowConverter, SortField};

use crate::value::{Value, ValueError, ValueType};

const VALUE_TAG: &[u8] = b"hypernodes/value/v2\0";
const NODE_TAG: &[u8] = b"hypernodes/node/v2\0";

/// Signatures as a `FixedSizeBinary(32)` array without nulls (the layout of
/// the cache's signature and hash columns).
pub fn signature_array(sigs: &[Signature]) -> ArrayRef {
    let mut bytes: Vec<u8> = Vec::with_capacity(sigs.len() * 32);
    for s in sigs {
        bytes.extend_from_slice(&s.0);
    }
    std::sync::Arc::new(arrow_array::FixedSizeBinaryArray::new(
        32,
        bytes.into(),
        None,
    ))
}

/// Hashes every row of an Arrow array: one signature per row.
pub fn hash_array(array: &ArrayRef) -> Result<Vec<Signature>, ValueError> {
    let mut out = vec![Signature([0; 32]); array.len()];
    hash_rows(array, &mut out, |slot, digest| slot.0 = digest)?;
    Ok(out)
}

/// Hashes every row of an Arrow array into a `FixedSizeBinary(32)` array
/// (the layout of signature and hash columns), written in place: no
/// intermediate list of signatures.
pub fn hash_column(array: &ArrayRef) -> Result<ArrayRef, ValueError> {
    let mut out = vec![[0u8; 32]; array.len()];
    hash_rows(array, &mut out, |slot, digest| *slot = digest)?;
    Ok(std::sync::Arc::new(arrow_array::FixedSizeBinaryArray::new(
        32,
        out.into_flattened().into(),
        None,
    )))
}

/// Hashes row `i` of `array` into `out[i]` (through `put`). Large arrays
/// (a whole mapped input) are hashed on all cores, each thread writing its
/// own part of `out`.
fn hash_rows<T: Send>(
    array: &ArrayRef,
    out: &mut [T],
    put: impl Fn(&mut T, [u8; 32]) + Sync,
) -> Result<(), ValueError> {
    const CHUNK: usize = 1 << 16;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    if array.len() < 2 * CHUNK || workers == 1 {
        return hash_chunk(array, out, &put);
    }
    let per = array.len().div_ceil(workers).max(CHUNK);
    let put = &put;
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per)
            .enumerate()
            .map(|(k, part)| {
                let rows = array.slice(k * per, part.len());
                s.spawn(move || hash_chunk(&rows, part, put))
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join().unwrap_or_else(|_| {
                Err(ValueError {
                    type_name: "arrow array",
                    message: "hashing panicked".into(),
                })
            })
        })
    })
}

fn hash_chunk<T>(
    array: &ArrayRef,
    out: &mut [T],
    put: &impl Fn(&mut T, [u8; 32]),
) -> Result<(), ValueError> {
    let err = |e: arrow_schema::ArrowError| ValueError {
        type_name: "arrow array",
        message: e.to_string(),
    };
    let data_type = array.data_type();
    let converter = RowConverter::new(vec![SortField::new(data_type.clone())]).map_err(err)?;
    let type_tag = format!("{data_type:?}");
    let mut key = blake3::Hasher::new();
    key.update(VALUE_TAG);
    key.update(&(type_tag.len() as u64).to_le_bytes());
    key.update(type_tag.as_bytes());
    let key = *key.finalize().as_bytes();
    // Rows are encoded a few thousand at a time into one reused buffer,
    // which stays in cache while it is hashed.
    const STEP: usize = 4096;
    let mut rows = converter.empty_rows(STEP.min(array.len()), 0);
    let mut digests = vec![[0u8; 32]; STEP.min(array.len())];
    for (k, slots) in out.chunks_mut(STEP).enumerate() {
        let part = array.slice(k * STEP, slots.len());
        rows.clear();
        converter.append(&mut rows, &[part]).map_err(err)?;
        let msgs: Vec<&[u8]> = rows.iter().map(|row| row.data()).collect();
        lanes::keyed_hash_many(&key, &msgs, &mut digests);
        for (slot, digest) in slots.iter_mut().zip(&digests) {
            put(slot, *digest);
        }
    }
    Ok(())
}

/// Hashes values of one Arrow-capable type: one signature per value.
/// Values too large for one Arrow array together (more than 2 GiB of text,
/// say) are hashed in parts: a value's hash does not depend on its
/// neighbours. A single value too large for an array is an error.
pub fn hash_values(ty: &ValueType, values: &[&Value]) -> Result<Vec<Signature>, ValueError> {
    match ty.to_array(values) {
        Ok(array) => hash_array(&array),
        Err(_) if values.len() > 1 => {
            let (a, b) = values.split_at(values.len() / 2);
            let mut out = hash_values(ty, a)?;
            out.extend(hash_values(ty, b)?);
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

/// The key of one node's signatures: everything but the inputs, hashed once
/// so each item costs one short keyed hash.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NodeKey {
    key: [u8; 32],
    inputs: usize,
}

impl NodeKey {
    /// The key for a node with code hash `code`, `inputs` inputs and `salt`:
    /// `blake3(tag || code || u64_le(inputs) || u64_le(len(salt)) || salt)`.
    pub fn new(code: &Signature, inputs: usize, salt: &[u8]) -> NodeKey {
        let mut h = blake3::Hasher::new();
        h.update(NODE_TAG);
        h.update(&code.0);
        h.update(&(inputs as u64).to_le_bytes());
        h.update(&(salt.len() as u64).to_le_bytes());
        h.update(salt);
        NodeKey {
            key: *h.finalize().as_bytes(),
            inputs,
        }
    }

    /// Signatures of items `0..rows`: `inputs_of(row, buf)` pushes the
    /// row's input hashes (in the node's input order) and returns whether the
    /// row has them all; rows without get `None`. Equal to calling
    /// [`sign`](NodeKey::sign) per row, but many rows are hashed at once.
    pub fn sign_rows(
        &self,
        rows: usize,
        mut inputs_of: impl FnMut(usize, &mut Vec<Signature>) -> bool,
    ) -> Vec<Option<Signature>> {
        const STEP: usize = 1024;
        let width = 32 * self.inputs;
        let mut out = vec![None; rows];
        let mut bytes: Vec<u8> = Vec::with_capacity(STEP * width);
        let mut signed: Vec<usize> = Vec::with_capacity(STEP);
        let mut inputs = Vec::with_capacity(self.inputs);
        let mut digests = vec![[0u8; 32]; STEP];
        for (k, part) in out.chunks_mut(STEP).enumerate() {
            bytes.clear();
            signed.clear();
            for (i, slot) in part.iter_mut().enumerate() {
                inputs.clear();
                if !inputs_of(k * STEP + i, &mut inputs) {
                    continue;
                }
                if inputs.len() != self.inputs {
                    *slot = Some(self.sign(&inputs));
                    continue;
                }
                for s in &inputs {
                    bytes.extend_from_slice(&s.0);
                }
                signed.push(i);
            }
            let msgs: Vec<&[u8]> = if width == 0 {
                vec![&[]; signed.len()]
            } else {
                bytes.chunks_exact(width).collect()
            };
            lanes::keyed_hash_many(&self.key, &msgs, &mut digests);
            for (&i, digest) in signed.iter().zip(&digests) {
                part[i] = Some(Signature(*digest));
            }
        }
        out
    }

    /// Signatures of a one-input node for a whole column of its input's
    /// value hashes (a `FixedSizeBinary(32)` array): hashed where they lie,
    /// written straight into the result, null where the input hash is.
    /// `None` when the key is not for one input or the column does not
    /// hold 32-byte hashes.
    pub fn sign_column(&self, hashes: &arrow_array::FixedSizeBinaryArray) -> Option<ArrayRef> {
        if self.inputs != 1 || hashes.value_length() != 32 {
            return None;
        }
        let mut out = vec![[0u8; 32]; hashes.len()];
        // A thousand rows at a time: the list of messages stays small.
        let mut msgs: Vec<&[u8]> = Vec::with_capacity(1024);
        for (k, part) in out.chunks_mut(1024).enumerate() {
            msgs.clear();
            msgs.extend((k * 1024..k * 1024 + part.len()).map(|r| hashes.value(r)));
            lanes::keyed_hash_many(&self.key, &msgs, part);
        }
        Some(std::sync::Arc::new(arrow_array::FixedSizeBinaryArray::new(
            32,
            out.into_flattened().into(),
            hashes.nulls().cloned(),
        )))
    }

    /// The node's signature for one item from its inputs' value hashes, in
    /// the node's input order (there must be as many as the key was made for;
    /// a different count gives a different key's signature, never a collision).
    pub fn sign(&self, inputs: &[Signature]) -> Signature {
        if inputs.len() != self.inputs {
            return NodeKey::new(&Signature(self.key), inputs.len(), b"arity").sign(inputs);
        }
        let mut bytes: smallvec::SmallVec<[u8; 128]> = smallvec::SmallVec::new();
        for s in inputs {
            bytes.extend_from_slice(&s.0);
        }
        Signature(*blake3::keyed_hash(&self.key, &bytes).as_bytes())
    }
}

/// A node's signature for one item: its code hash, its inputs' value hashes
/// (in the node's input order) and a salt. Equal to
/// `NodeKey::new(code, inputs.len(), salt).sign(inputs)`.
pub fn node_signature(code: &Signature, inputs: &[Signature], salt: &[u8]) -> Signature {
    NodeKey::new(code, inputs.len(), salt).sign(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ArrowValue;

    #[test]
    fn large_arrays_hash_in_parallel_to_the_same_signatures() {
        let values: Vec<String> = (0..300_000).map(|i| format!("text {i}")).collect();
        let array: ArrayRef = std::sync::Arc::new(arrow_array::StringArray::from(values));
        let parallel = hash_array(&array).unwrap();
        let column = hash_column(&array).unwrap();
        let column = arrow_array::cast::AsArray::as_fixed_size_binary(column.as_ref());
        assert_eq!(column.len(), parallel.len());
        for (i, sig) in parallel.iter().enumerate() {
            assert_eq!(column.value(i), sig.as_bytes(), "row {i}");
        }
        // One thread over all rows gives the same.
        let mut serial = vec![Signature([0; 32]); array.len()];
        hash_chunk(&array, &mut serial, &|slot: &mut Signature, d| slot.0 = d).unwrap();
        assert_eq!(parallel, serial);
        let tail = array.slice(299_990, 10);
        assert_eq!(hash_array(&tail).unwrap(), parallel[299_990..]);
    }

    fn sigs<T: ArrowValue>(values: &[T]) -> Vec<Signature> {
        let values: Vec<Value> = values.iter().cloned().map(Value::new).collect();
        let refs: Vec<&Value> = values.iter().collect();
        hash_values(&ValueType::arrow::<T>(), &refs).unwrap()
    }

    #[test]
    fn equal_values_hash_equal_whatever_the_batch() {
        let a = sigs(&["x".to_string(), "y".into(), "x".into()]);
        assert_eq!(a[0], a[2]);
        assert_ne!(a[0], a[1]);
        let alone = sigs(&["y".to_string()]);
        assert_eq!(
            alone[0], a[1],
            "a value's hash does not depend on its neighbours"
        );
    }

    #[test]
    fn type_is_part_of_the_hash() {
        assert_ne!(sigs(&[5i64])[0], sigs(&[5i32])[0]);
        assert_ne!(sigs(&[Some(5i64)])[0], sigs(&[None::<i64>])[0]);
        assert_ne!(sigs(&[vec![1i64, 2]])[0], sigs(&[vec![1i64], vec![2]])[0]);
    }

    #[test]
    fn hashes_are_stable() {
        // The cache format depends on these bytes: a change here is a format change.
        assert_eq!(
            sigs(&["hello".to_string()])[0].to_hex(),
            "e08cd20df9e62e1fdb5f0ff2d5aab20f4bb6b2a3e8f0f5a55a50ab12dfedbce3"
        );
        assert_eq!(
            sigs(&[vec![Some(1i64), None]])[0].to_hex(),
            "47db12032ce6101dc422a83bf458b6d63893748e7596c432d9d460ee40a8cbcb"
        );
        let s = sigs(&[42i64])[0];
        assert_eq!(
            node_signature(&Signature::of_bytes("code", b"f"), &[s], b"salt").to_hex(),
            "923155028b12f784d412390a20bc75fc160d843e6b8f99b1ba83bef71a528ea6"
        );
        // The documented construction, spelled out.
        let key = blake3::keyed_hash(&[7; 32], b"");
        let code = Signature(*key.as_bytes());
        let mut k = blake3::Hasher::new();
        k.update(b"hypernodes/node/v2\0");
        k.update(&code.0);
        k.update(&1u64.to_le_bytes());
        k.update(&0u64.to_le_bytes());
        let spelled = blake3::keyed_hash(k.finalize().as_bytes(), &s.0);
        assert_eq!(node_signature(&code, &[s], b"").0, *spelled.as_bytes());
        assert_eq!(Signature::from_hex(&s.to_hex()), Some(s));
        assert_eq!(Signature::from_hex("zz"), None);
    }

    #[test]
    fn signing_many_rows_equals_signing_each() {
        let code = Signature::of_bytes("code", b"fn f");
        let x = sigs(&(0..3000i64).collect::<Vec<_>>());
        for inputs in [0, 1, 2, 3, 5] {
            let key = NodeKey::new(&code, inputs, b"salt");
            let row = |r: usize| -> Vec<Signature> {
                (0..inputs).map(|k| x[(r + k) % x.len()]).collect()
            };
            // Every seventh row lacks an input; every eleventh has one too many.
            let many = key.sign_rows(x.len(), |r, buf| {
                if r % 7 == 3 {
                    return false;
                }
                buf.extend(row(r));
                if r % 11 == 5 {
                    buf.push(x[0]);
                }
                true
            });
            assert_eq!(many.len(), x.len());
            for (r, got) in many.iter().enumerate() {
                let mut want = row(r);
                if r % 11 == 5 {
                    want.push(x[0]);
                }
                let want = (r % 7 != 3).then(|| key.sign(&want));
                assert_eq!(*got, want, "{inputs} inputs, row {r}");
            }
        }
    }

    #[test]
    fn signing_a_column_equals_signing_each_row() {
        let code = Signature::of_bytes("code", b"fn f");
        // Over two thousand rows: more than one step of the signing loop.
        let x = sigs(&(0..2500i64).collect::<Vec<_>>());
        let mut bytes = Vec::new();
        for s in &x {
            bytes.extend_from_slice(&s.0);
        }
        let nulls = arrow_buffer::NullBuffer::from_iter((0..2500).map(|r| r % 9 != 4));
        let column = arrow_array::FixedSizeBinaryArray::new(32, bytes.into(), Some(nulls));
        let key = NodeKey::new(&code, 1, b"");
        let signed = key.sign_column(&column).unwrap();
        let signed = arrow_array::cast::AsArray::as_fixed_size_binary(signed.as_ref());
        for (r, s) in x.iter().enumerate() {
            if r % 9 == 4 {
                assert!(signed.is_null(r), "row {r}");
            } else {
                assert_eq!(signed.value(r), key.sign(&[*s]).as_bytes(), "row {r}");
            }
        }
        // Only for one-input keys.
        assert!(NodeKey::new(&code, 2, b"").sign_column(&column).is_none());
    }

    #[test]
    fn signature_columns_are_read_in_place() {
        let x = sigs(&(0..10i64).collect::<Vec<_>>());
        let column = signature_array(&x);
        let column = arrow_array::cast::AsArray::as_fixed_size_binary(column.as_ref());
        assert_eq!(Signature::slice_of(column), Some(&x[..]));
        // A slice of the column reads its own rows.
        assert_eq!(Signature::slice_of(&column.slice(3, 4)), Some(&x[3..7]));
        // Nulls or another width: not a signature column.
        let nulls = arrow_buffer::NullBuffer::from_iter((0..10).map(|r| r != 2));
        let with_nulls = arrow_array::FixedSizeBinaryArray::new(
            32,
            column.value_data().to_vec().into(),
            Some(nulls),
        );
        assert_eq!(Signature::slice_of(&with_nulls), None);
        let narrow = arrow_array::FixedSizeBinaryArray::new(16, vec![0u8; 32].into(), None);
        assert_eq!(Signature::slice_of(&narrow), None);
    }

    #[test]
    fn node_signatures_cover_code_inputs_and_salt() {
        let code = Signature::of_bytes("code", b"fn f");
        let other = Signature::of_bytes("code", b"fn g");
        let x = sigs(&[1i64, 2]);
        let base = node_signature(&code, &x[..1], b"");
        assert_eq!(base, node_signature(&code, &x[..1], b""));
        assert_ne!(base, node_signature(&other, &x[..1], b""));
        assert_ne!(base, node_signature(&code, &x[1..], b""));
        assert_ne!(base, node_signature(&code, &x[..1], b"v2"));
        assert_ne!(
            node_signature(&code, &[x[0], x[1]], b""),
            node_signature(&code, &[x[1], x[0]], b"")
        );
    }
}
