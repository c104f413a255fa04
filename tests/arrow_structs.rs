//! `#[derive(ArrowValue)]` on user structs: structs whose fields all have an
//! Arrow form are encoded column by column (a struct of the fields' own
//! columns); others (serde attributes, fields without an Arrow form) go
//! through serde. Both must round-trip exactly, nest in `Vec` and `Option`,
//! and read older or foreign struct columns with clear errors.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, StringArray, StructArray};
use arrow_schema::{DataType, Field};
use hypernodes::ArrowValue;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ArrowValue)]
struct Origin {
    id: i64,
    first: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ArrowValue)]
struct Doc {
    text: String,
    r#type: String,
    tags: Vec<String>,
    score: Option<f64>,
    origin: Origin,
    parents: Vec<Origin>,
    previous: Option<Origin>,
    flags: Vec<Option<bool>>,
}

/// A field without an Arrow form: the struct takes the serde path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ArrowValue)]
struct Counted {
    name: String,
    pair: (String, i64),
}

/// A serde attribute that reshapes the struct: the serde path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ArrowValue)]
struct Renamed {
    #[serde(rename = "label")]
    name: String,
    size: u32,
}

fn doc(i: i64) -> Doc {
    let words: Vec<String> = (0..i % 5).map(|w| format!("w{i}_{w}")).collect();
    Doc {
        text: words.join(" "),
        r#type: if i % 2 == 0 { "even" } else { "odd" }.to_string(),
        score: (i % 3 != 0).then_some(i as f64 / 2.0),
        origin: Origin {
            id: i,
            first: words.first().cloned(),
        },
        parents: (0..i % 3)
            .map(|p| Origin {
                id: i * 10 + p,
                first: (p % 2 == 0).then(|| format!("p{p}")),
            })
            .collect(),
        previous: (i % 4 != 0).then(|| Origin {
            id: i - 1,
            first: None,
        }),
        flags: (0..i % 4).map(|f| (f != 1).then_some(f % 2 == 0)).collect(),
        tags: words,
    }
}

fn round_trip<T: ArrowValue + PartialEq + std::fmt::Debug>(values: &[T]) -> ArrayRef {
    let refs: Vec<&T> = values.iter().collect();
    let array = T::to_array(&refs).unwrap();
    assert_eq!(array.len(), values.len());
    assert_eq!(array.data_type(), &T::data_type());
    assert_eq!(T::from_array(array.as_ref()).unwrap(), values);
    array
}

#[test]
fn a_struct_of_arrow_fields_is_a_struct_of_their_columns() {
    let docs: Vec<Doc> = (0..2_000).map(doc).collect();
    let array = round_trip(&docs);
    let DataType::Struct(fields) = Doc::data_type() else {
        panic!("a struct type, got {:?}", Doc::data_type());
    };
    let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "text", "type", "tags", "score", "origin", "parents", "previous", "flags"
        ]
    );
    // Each field is its own type's Arrow form.
    for (field, expected) in fields.iter().zip([
        String::field("text"),
        String::field("type"),
        Vec::<String>::field("tags"),
        Option::<f64>::field("score"),
        Origin::field("origin"),
        Vec::<Origin>::field("parents"),
        Option::<Origin>::field("previous"),
        Vec::<Option<bool>>::field("flags"),
    ]) {
        assert_eq!(field.as_ref(), &expected);
    }
    let array = array.as_any().downcast_ref::<StructArray>().unwrap();
    let texts = array.column_by_name("text").unwrap();
    let texts = texts.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(texts.value(7), docs[7].text);
    // A slice decodes to its own rows.
    let slice = array.slice(100, 50);
    assert_eq!(Doc::from_array(&slice).unwrap(), docs[100..150]);
}

#[test]
fn structs_nest_in_lists_and_options() {
    let lists: Vec<Vec<Doc>> = (0..300)
        .map(|i| (0..i % 4).map(|j| doc(i * 4 + j)).collect())
        .collect();
    round_trip(&lists);
    let options: Vec<Option<Doc>> = (0..300).map(|i| (i % 3 != 1).then(|| doc(i))).collect();
    round_trip(&options);
    round_trip::<Doc>(&[]);
}

#[test]
fn serde_attributes_and_fields_without_an_arrow_form_take_the_serde_path() {
    let counted: Vec<Counted> = (0..200)
        .map(|i| Counted {
            name: format!("c{i}"),
            pair: (format!("k{i}"), i64::from(i) * 3),
        })
        .collect();
    round_trip(&counted);
    let renamed: Vec<Renamed> = (0..200)
        .map(|i| Renamed {
            name: format!("r{i}"),
            size: i,
        })
        .collect();
    round_trip(&renamed);
    let DataType::Struct(fields) = Renamed::data_type() else {
        panic!("a struct type, got {:?}", Renamed::data_type());
    };
    assert_eq!(fields[0].name(), "label", "serde's rename is kept");
}

fn origin_column(ids: Vec<i64>, extra: Option<ArrayRef>) -> ArrayRef {
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    let len = ids.len();
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(ids))];
    if let Some(extra) = extra {
        fields.push(Field::new("note", extra.data_type().clone(), true));
        columns.push(extra);
    }
    Arc::new(StructArray::try_new_with_length(fields.into(), columns, None, len).unwrap())
}

#[test]
fn a_column_without_an_optional_field_reads_it_as_none_and_ignores_extra_fields() {
    let note: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
    let column = origin_column(vec![1, 2, 3], Some(note));
    let origins = Origin::from_array(column.as_ref()).unwrap();
    assert_eq!(
        origins,
        (1..=3)
            .map(|id| Origin { id, first: None })
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_column_without_a_required_field_is_an_error_naming_the_field_and_type() {
    let fields = vec![Field::new("first", DataType::Utf8, true)];
    let columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![Some("x")]))];
    let column = StructArray::try_new_with_length(fields.into(), columns, None, 1).unwrap();
    let e = Origin::from_array(&column).unwrap_err().to_string();
    assert!(e.contains("Origin"), "{e}");
    assert!(e.contains("no field `id`"), "{e}");
    assert!(e.contains("first"), "{e}");
}

#[test]
fn a_null_struct_needs_an_option_and_a_wrong_column_type_is_named() {
    let options = [Some(Origin { id: 1, first: None }), None];
    let refs: Vec<&Option<Origin>> = options.iter().collect();
    let column = Option::<Origin>::to_array(&refs).unwrap();
    let e = Origin::from_array(column.as_ref()).unwrap_err().to_string();
    assert!(e.contains("null"), "{e}");
    assert!(e.contains("Option<"), "{e}");
    let ints = Int64Array::from(vec![1, 2]);
    let e = Origin::from_array(&ints).unwrap_err().to_string();
    assert!(e.contains("Int64"), "{e}");
    assert!(e.contains("Origin"), "{e}");
    assert_eq!(origin_column(vec![4], None).len(), 1);
}
