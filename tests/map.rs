//! `map`: zip and product, fixed inputs, columnar results, error policy and
//! retries; every engine.

mod common;

use std::sync::Mutex;

use hypernodes::{Error, Inputs, MapOptions, Pipeline, inputs, node};

#[node(output = "sum")]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[node(output = "label")]
fn describe(sum: i64, prefix: &str) -> String {
    format!("{prefix}{sum}")
}

fn pipeline() -> Pipeline {
    Pipeline::new([add::node(), describe::node()]).unwrap()
}

#[test]
fn zip_maps_items_side_by_side_with_fixed_inputs() {
    for (name, engine) in common::engines() {
        let p = pipeline().with_shared_engine(engine);
        let r = p
            .map(
                inputs! {"a" => vec![1i64, 2, 3], "b" => vec![10i64, 20, 30], "prefix" => "#"},
                ["a", "b"],
            )
            .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.values::<i64>("sum").unwrap(), vec![11, 22, 33], "{name}");
        assert_eq!(
            r.values::<String>("label").unwrap(),
            vec!["#11", "#22", "#33"]
        );
        // Fixed input beside a mapped one.
        let r = p
            .map(
                inputs! {"a" => vec![1i64, 2], "b" => 100i64, "prefix" => ""},
                ["a"],
            )
            .unwrap();
        assert_eq!(r.values::<i64>("sum").unwrap(), vec![101, 102], "{name}");
    }
}

#[test]
fn zip_of_different_lengths_is_an_error_naming_them() {
    let err = pipeline()
        .map(
            inputs! {"a" => vec![1i64, 2, 3], "b" => vec![1i64], "prefix" => ""},
            ["a", "b"],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "zip map needs lists of one length, got `a`: 3, `b`: 1"
    );
}

#[test]
fn product_maps_every_combination_last_input_fastest() {
    for (name, engine) in common::engines() {
        let p = pipeline().with_shared_engine(engine);
        let r = p
            .map(
                inputs! {"a" => vec![1i64, 2], "b" => vec![10i64, 20, 30], "prefix" => ""},
                MapOptions::over(["a", "b"]).product(),
            )
            .unwrap();
        assert_eq!(
            r.values::<i64>("sum").unwrap(),
            vec![11, 21, 31, 12, 22, 32],
            "{name}"
        );
    }
}

#[test]
fn empty_collections_give_empty_results() {
    for (name, engine) in common::engines() {
        let p = pipeline().with_shared_engine(engine);
        let r = p
            .map(
                inputs! {"a" => Vec::<i64>::new(), "b" => 1i64, "prefix" => ""},
                ["a"],
            )
            .unwrap();
        assert!(r.is_empty(), "{name}");
        assert_eq!(r.names(), ["sum", "label"]);
        assert_eq!(r.to_record_batch().unwrap().num_rows(), 0);
    }
}

#[test]
fn results_are_columnar_with_typed_access_rows_and_arrow() {
    for (name, engine) in common::engines() {
        let p = pipeline().with_shared_engine(engine);
        let n = 1000i64;
        let a: Vec<i64> = (0..n).collect();
        let r = p
            .map(inputs! {"a" => a, "b" => 1i64, "prefix" => "n"}, ["a"])
            .unwrap();
        let sums = r.column::<i64>("sum").unwrap();
        assert_eq!(sums.len(), 1000);
        assert_eq!(sums.get(999), Some(&1000));
        assert!(
            sums.iter()
                .enumerate()
                .all(|(i, v)| v == Some(&(i as i64 + 1))),
            "{name}: order"
        );
        let row = r.row(5).unwrap();
        assert_eq!(row.get::<String>("label").unwrap(), "n6");
        assert_eq!(r.rows().filter(|row| row.is_ok()).count(), 1000);
        let err = r.column::<String>("sum").err().unwrap();
        assert_eq!(err.to_string(), "output `sum` has type `i64`, not `String`");
        let batch = r.to_record_batch().unwrap();
        assert_eq!(batch.num_rows(), 1000);
        assert_eq!(batch.schema().field(0).name(), "sum");
        assert_eq!(
            batch.schema().field(1).data_type(),
            &arrow_schema::DataType::Utf8
        );
    }
}

#[test]
fn stop_policy_reports_the_first_failing_item() {
    for (name, engine) in common::engines() {
        let p = Pipeline::new([common::check::node()])
            .unwrap()
            .with_shared_engine(engine);
        let err = p
            .map(inputs! {"x" => vec![1i64, 2, 3, 4, 6]}, ["x"])
            .unwrap_err();
        assert_eq!(err.item(), Some(2), "{name}");
        assert_eq!(
            err.to_string(),
            "node `check` failed in pipeline `pipeline` on item 2: 3 is a multiple of 3"
        );
    }
}

#[test]
fn continue_policy_finishes_every_other_item_and_lists_failures() {
    for (name, engine) in common::engines() {
        let rec = common::Recorder::new();
        let p = Pipeline::new([common::check::node()])
            .unwrap()
            .with_shared_engine(engine)
            .with_callback(rec.clone());
        let r = p
            .map(
                inputs! {"x" => vec![1i64, 3, 4, 6, 7]},
                MapOptions::over(["x"]).continue_on_error(),
            )
            .unwrap();
        let calls = rec
            .take()
            .iter()
            .filter(|e| e.ends_with("node_start check"))
            .count();
        assert_eq!(calls, 5, "{name}: every item ran once");
        let failed: Vec<(usize, &str)> = r.failures().iter().map(|f| (f.index, f.node())).collect();
        assert_eq!(failed, [(1, "check"), (3, "check")], "{name}");
        assert_eq!(
            r.failures()[0].message(),
            "node `check` failed in pipeline `pipeline` on item 1: 3 is a multiple of 3"
        );
        let col = common::optional_i64s(&r, "checked");
        assert_eq!(col, [Some(1), None, Some(4), None, Some(7)]);
        assert!(!r.is_ok(1) && r.is_ok(2));
        assert!(matches!(
            r.values::<i64>("checked"),
            Err(Error::MissingValue { index: 1, .. })
        ));
        let batch = r.to_record_batch().unwrap();
        assert_eq!(batch.column(0).null_count(), 2);
        // Retry exactly the failed items.
        let retry: Vec<i64> = r
            .failures()
            .iter()
            .map(|f| [1i64, 3, 4, 6, 7][f.index] + 1)
            .collect();
        let again = p.map(Inputs::new().with("x", retry), ["x"]).unwrap();
        assert_eq!(again.values::<i64>("checked").unwrap(), vec![4, 7]);
    }
}

static ATTEMPTS: Mutex<Vec<i64>> = Mutex::new(Vec::new());

#[node(output = "steady", retries = 2)]
fn transient(x: i64) -> Result<i64, String> {
    let mut seen = ATTEMPTS.lock().unwrap();
    seen.push(x);
    let tries = seen.iter().filter(|&&v| v == x).count();
    // Item 1 succeeds on its third attempt; item 2 never does.
    match x {
        1 if tries < 3 => Err(format!("attempt {tries} failed")),
        2 => Err(format!("attempt {tries} failed")),
        _ => Ok(x * 10),
    }
}

#[test]
fn retries_are_attempted_and_reported() {
    let rec = common::Recorder::new();
    let p = Pipeline::new([transient::node()])
        .unwrap()
        .with_callback(rec.clone());
    ATTEMPTS.lock().unwrap().clear();
    let out = p.run(inputs! {"x" => 1i64}).unwrap();
    assert_eq!(*out.get::<i64>("steady").unwrap(), 10);
    let retries: Vec<String> = rec
        .take()
        .into_iter()
        .filter(|e| e.contains("retry"))
        .collect();
    assert_eq!(
        retries,
        [
            "pipeline node_retry transient 1 attempt 1 failed",
            "pipeline node_retry transient 2 attempt 2 failed"
        ]
    );
    let err = p.run(inputs! {"x" => 2i64}).unwrap_err();
    assert!(
        matches!(err, Error::NodeFailed { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(
        ATTEMPTS.lock().unwrap().iter().filter(|&&v| v == 2).count(),
        3
    );
}
