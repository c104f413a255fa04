//! [`ArrowValue`]: the Rust types with an Arrow form, and their
//! conversions (integers, floats, `bool`, `String`, `Vec<T>`, `Option<T>`,
//! structs field by field, and other serde types through `serde_arrow`).

use arrow_array::builder::BooleanBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, BooleanArray, ListArray, PrimitiveArray, UInt32Array};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, FieldRef};
use std::sync::{Arc, OnceLock};

use super::{ValueError, readable_type_name};

/// A Rust type with an Arrow form: the bridge between row and columnar engines.
///
/// Implemented for integers, floats, `bool`, `String`, `Vec<T>`, `Option<T>`,
/// and for structs through `#[derive(ArrowValue)]` (which needs serde's
/// `Serialize` and `Deserialize`; a struct whose fields all have an Arrow
/// form is converted field by field, as a struct of its fields' columns).
pub trait ArrowValue: Clone + Send + Sync + 'static {
    /// The Arrow type of one value.
    fn data_type() -> DataType;

    /// Whether Arrow fields of this type are nullable (true for `Option<T>`).
    fn nullable() -> bool {
        false
    }

    /// Encodes values into one Arrow array, in order.
    fn to_array(values: &[&Self]) -> Result<ArrayRef, ValueError>;

    /// Decodes an Arrow array into values, in order.
    fn from_array(array: &dyn Array) -> Result<Vec<Self>, ValueError>;

    /// The Arrow field for a column of this type.
    fn field(name: &str) -> Field {
        Field::new(name, Self::data_type(), Self::nullable())
    }
}

fn no_nulls<T>(array: &dyn Array) -> Result<(), ValueError> {
    if array.null_count() > 0 {
        Err(ValueError::new::<T>(format!(
            "array has {} null values; use Option<{}>",
            array.null_count(),
            readable_type_name::<T>()
        )))
    } else {
        Ok(())
    }
}

fn wrong_type<T>(array: &dyn Array) -> ValueError {
    ValueError::new::<T>(format!(
        "expected an array of {}, got {:?}",
        readable_type_name::<T>(),
        array.data_type()
    ))
}

macro_rules! primitive_arrow_value {
    ($($t:ty => $arrow:ty, $dt:expr;)*) => {$(
        impl ArrowValue for $t {
            fn data_type() -> DataType {
                $dt
            }
            fn to_array(values: &[&Self]) -> Result<ArrayRef, ValueError> {
                Ok(Arc::new(values.iter().map(|v| **v).collect::<PrimitiveArray<$arrow>>()))
            }
            fn from_array(array: &dyn Array) -> Result<Vec<Self>, ValueError> {
                no_nulls::<Self>(array)?;
                let array = array
                    .as_primitive_opt::<$arrow>()
                    .ok_or_else(|| wrong_type::<Self>(array))?;
                Ok(array.values().to_vec())
            }
        }
    )*};
}

primitive_arrow_value! {
    i8 => Int8Type, DataType::Int8;
    i16 => Int16Type, DataType::Int16;
    i32 => Int32Type, DataType::Int32;
    i64 => Int64Type, DataType::Int64;
    u8 => UInt8Type, DataType::UInt8;
    u16 => UInt16Type, DataType::UInt16;
    u32 => UInt32Type, DataType::UInt32;
    u64 => UInt64Type, DataType::UInt64;
    f32 => Float32Type, DataType::Float32;
    f64 => Float64Type, DataType::Float64;
}

impl ArrowValue for bool {
    fn data_type() -> DataType {
        DataType::Boolean
    }
    fn to_array(values: &[&Self]) -> Result<ArrayRef, ValueError> {
        let mut b = BooleanBuilder::with_capacity(values.len());
        for v in values {
            b.append_value(**v);
        }
        Ok(Arc::new(b.finish()))
    }
    fn from_array(array: &dyn Array) -> Result<Vec<Self>, ValueError> {
        no_nulls::<Self>(array)?;
        let array = array
            .as_boolean_opt()
            .ok_or_else(|| wrong_type::<Self>(array))?;
        Ok(array.values().iter().collect())
    }
}

impl ArrowValue for String {
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn to_array(values: &[&Self]) -> Result<ArrayRef, ValueError> {
        // Sized once: growing the byte buffer by doubling copies and
        // touches fresh memory several times over for a large column.
        let bytes: usize = values.iter().map(|v| v.len()).sum();
        if bytes > i32::MAX as usize {
            return Err(ValueError {
                type_name: "String",
                message: format!(
                    "{bytes} bytes of text do not fit one Arrow string array (at most {} bytes)",
                    i32::MAX
                ),
            });
        }
        let mut builder = arrow_array::builder::StringBuilder::with_capacity(values.len(), bytes);
        for v in values {
            builder.append_value(v);
        }
        Ok(Arc::new(builder.finish()))
    }
    fn from_array(array: &dyn Array) -> Result<Vec<Self>, ValueError> {
        no_nulls::<Self>(array)?;
        if let Some(a) = array.as_string_opt::<i32>() {
            return Ok(a
                .iter()
                .map(|s| s.unwrap_or_default().to_string())
                .collect());
        }
        if let Some(a) = array.as_string_opt::<i64>() {
            return Ok(a
                .iter()
                .map(|s| s.unwrap_or_default().to_string())
                .collect());
        }
        if let Some(a) = array.as_string_view_opt() {
            return Ok(a
                .iter()
                .map(|s| s.unwrap_or_default().to_string())
                .collect());
        }
        Err(wrong_type::<Self>(array))
    }
}

impl<T: ArrowValue> ArrowValue for Vec<T> {
    fn data_type() -> DataType {
        DataType::List(Arc::new(T::field("item")))
    }
    fn to_array(values: &[&Self]) -> Result<ArrayRef, ValueError> {
        let total: usize = values.iter().map(|v| v.len()).sum();
        let mut children: Vec<&T> = Vec::with_capacity(total);
        for v in values {
            children.extend(v.iter());
        }
        let child = T::to_array(&children)?;
        let offsets = OffsetBuffer::from_lengths(values.iter().map(|v| v.len()));
        let field: FieldRef = Arc::new(T::field("item"));
        let list = ListArray::try_new(field, offsets, child, None)
            .map_err(|e| ValueError::new::<Self>(e.to_string()))?;
        Ok(Arc::new(list))
    }
    fn from_array(array: &dyn Array) -> Result<Vec<Self>, ValueError> {
        no_nulls::<Self>(array)?;
        let list = array
            .as_list_opt::<i32>()
            .ok_or_else(|| wrong_type::<Self>(array))?;
        let offsets = list.value_offsets();
        let (first, last) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
        let child = list.values().slice(first, last - first);
        let mut items = T::from_array(child.as_ref())?.into_iter();
        Ok(offsets
            .windows(2)
            .map(|w| items.by_ref().take((w[1] - w[0]) as usize).collect())
            .collect())
    }
}

impl<T: ArrowValue> ArrowValue for Option<T> {
    fn data_type() -> DataType {
        T::data_type()
    }
    fn nullable() -> bool {
        true
    }
    fn to_array(values: &[&Self]) -> Result<ArrayRef, ValueError> {
        let present: Vec<&T> = values.iter().filter_map(|v| v.as_ref()).collect();
        let dense = T::to_array(&present)?;
        spread_with_nulls(dense.as_ref(), values.iter().map(|v| v.is_some()))
            .map_err(|e| ValueError::new::<Self>(e.to_string()))
    }
    fn from_array(array: &dyn Array) -> Result<Vec<Self>, ValueError> {
        if array.null_count() == 0 {
            return Ok(T::from_array(array)?.into_iter().map(Some).collect());
        }
        let mask: BooleanArray = (0..array.len()).map(|i| Some(array.is_valid(i))).collect();
        let dense = arrow_select::filter::filter(array, &mask)
            .map_err(|e| ValueError::new::<Self>(e.to_string()))?;
        let mut present = T::from_array(dense.as_ref())?.into_iter();
        Ok((0..array.len())
            .map(|i| {
                if array.is_valid(i) {
                    present.next()
                } else {
                    None
                }
            })
            .collect())
    }
}

/// Spreads the rows of `dense` over the positions where `present` is true,
/// with nulls elsewhere.
pub(crate) fn spread_with_nulls(
    dense: &dyn Array,
    present: impl Iterator<Item = bool>,
) -> Result<ArrayRef, arrow_schema::ArrowError> {
    let mut next = 0u32;
    let indices: UInt32Array = present
        .map(|p| {
            p.then(|| {
                next += 1;
                next - 1
            })
        })
        .collect();
    arrow_select::take::take(dense, &indices, None)
}

/// Arrow conversion for serde types, used by `#[derive(ArrowValue)]`.
#[doc(hidden)]
pub mod serde_support {
    use super::*;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_arrow::schema::{SchemaLike, TracingOptions};
    use serde_arrow::utils::Items;

    /// Traces the Arrow field of `T`, once per type (the caller caches it).
    pub fn trace_field<T: Serialize + DeserializeOwned>() -> Result<FieldRef, String> {
        let fields = Vec::<FieldRef>::from_type::<serde_arrow::utils::Item<T>>(
            TracingOptions::default()
                .allow_null_fields(true)
                .strings_as_large_utf8(false),
        )
        .map_err(|e| e.to_string())?;
        fields
            .into_iter()
            .next()
            .ok_or_else(|| "no field traced".to_string())
    }

    /// The cached field of `T`, or a panic naming the type: a type that
    /// cannot be traced is a programming error found on first use.
    pub fn field<T: Serialize + DeserializeOwned>(
        cell: &'static OnceLock<Result<FieldRef, String>>,
    ) -> FieldRef {
        match cell.get_or_init(trace_field::<T>) {
            Ok(f) => f.clone(),
            Err(e) => panic!(
                "type `{}` has no Arrow form: {e}",
                readable_type_name::<T>()
            ),
        }
    }

    /// The Arrow type of `T`, traced once into `cell`.
    pub fn data_type<T: Serialize + DeserializeOwned>(
        cell: &'static OnceLock<Result<FieldRef, String>>,
    ) -> DataType {
        field::<T>(cell).data_type().clone()
    }

    /// [`to_array`] with `T`'s field traced once into `cell`.
    pub fn encode<T: Serialize + DeserializeOwned>(
        cell: &'static OnceLock<Result<FieldRef, String>>,
        values: &[&T],
    ) -> Result<ArrayRef, ValueError> {
        to_array(field::<T>(cell), values)
    }

    /// [`from_array`] with `T`'s field traced once into `cell`.
    pub fn decode<T: Serialize + DeserializeOwned>(
        cell: &'static OnceLock<Result<FieldRef, String>>,
        array: &dyn Array,
    ) -> Result<Vec<T>, ValueError> {
        from_array(field::<T>(cell), array)
    }

    /// Encodes serde values into one array.
    pub fn to_array<T: Serialize>(field: FieldRef, values: &[&T]) -> Result<ArrayRef, ValueError> {
        let mut arrays = serde_arrow::to_arrow(&[field], Items(values))
            .map_err(|e| ValueError::new::<T>(e.to_string()))?;
        arrays
            .pop()
            .ok_or_else(|| ValueError::new::<T>("no array produced"))
    }

    /// Decodes an array into serde values.
    pub fn from_array<T: DeserializeOwned>(
        field: FieldRef,
        array: &dyn Array,
    ) -> Result<Vec<T>, ValueError> {
        let arrays = [arrow_array::make_array(array.to_data())];
        let Items(items): Items<Vec<T>> = serde_arrow::from_arrow(&[field], &arrays)
            .map_err(|e| ValueError::new::<T>(e.to_string()))?;
        Ok(items)
    }
}

/// Arrow conversion for structs whose fields all have an Arrow form, used by
/// `#[derive(ArrowValue)]`: one Arrow struct column whose children are the
/// fields' own columns, each field encoded and decoded a column at a time by
/// its type's [`ArrowValue`] (no per-value serde walk).
#[doc(hidden)]
pub mod struct_support {
    use super::*;
    use arrow_array::StructArray;
    use arrow_schema::Fields;

    /// The struct column of `T` from its fields' columns, in field order.
    pub fn to_array<T>(
        fields: &Fields,
        columns: Vec<ArrayRef>,
        len: usize,
    ) -> Result<ArrayRef, ValueError> {
        let array = StructArray::try_new_with_length(fields.clone(), columns, None, len)
            .map_err(|e| ValueError::new::<T>(e.to_string()))?;
        Ok(Arc::new(array))
    }

    /// The child columns of a struct column of `T`, one per field of
    /// `fields` in order, found by name. A missing nullable field reads as
    /// all nulls (an older table without an optional field); a missing
    /// required field, a null struct or a column of another type is an
    /// error that names it.
    pub fn columns<T>(array: &dyn Array, fields: &Fields) -> Result<Vec<ArrayRef>, ValueError> {
        no_nulls::<T>(array)?;
        let array = array
            .as_struct_opt()
            .ok_or_else(|| wrong_type::<T>(array))?;
        fields
            .iter()
            .map(|field| match array.column_by_name(field.name()) {
                Some(column) => Ok(column.clone()),
                None if field.is_nullable() => {
                    Ok(arrow_array::new_null_array(field.data_type(), array.len()))
                }
                None => Err(ValueError::new::<T>(format!(
                    "the struct column has no field `{}` (it has: {})",
                    field.name(),
                    array.column_names().join(", ")
                ))),
            })
            .collect()
    }

    /// The decoded values, checked to be one per row (`len`): a field that
    /// decoded to fewer values would otherwise shorten the column.
    pub fn decoded<T>(values: Vec<T>, len: usize) -> Result<Vec<T>, ValueError> {
        if values.len() == len {
            Ok(values)
        } else {
            Err(ValueError::new::<T>(format!(
                "decoded {} values from a struct column of {len} rows",
                values.len()
            )))
        }
    }
}
