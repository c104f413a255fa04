//! Tables in, tables out: maps over record batches and real Parquet files,
//! results written to Parquet, on every engine: columns matched and
//! checked against inputs, nulls and failures per row, carried columns,
//! and cache entries shared with `Vec` inputs.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{
    ArrayRef, Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray, StringViewArray,
};
use hypernodes::table::Table;
use hypernodes::{Callback, CallbackContext, DiskCache, Error, Inputs, MapOptions, Pipeline, node};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

#[node(output = "word_count")]
fn count(text: &str) -> Result<i64, String> {
    if text.contains("poison") {
        return Err(format!("cannot count {text:?}"));
    }
    Ok(text.split_whitespace().count() as i64)
}

#[node(output = "scaled")]
fn scale(word_count: i64, factor: i64) -> i64 {
    word_count * factor
}

fn pipeline() -> Pipeline {
    Pipeline::new([count::node(), scale::node()]).unwrap()
}

/// Counts the items `count` computed (its node ends).
#[derive(Default)]
struct Computed(AtomicUsize);

impl Callback for Computed {
    fn on_node_end(&self, _: &CallbackContext<'_>, node: &str, _: std::time::Duration) {
        if node == "count" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("text {i} has {} words", i % 5))
        .collect()
}

fn batch(ids: Vec<i64>, bodies: ArrayRef) -> RecordBatch {
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("body", bodies),
    ])
    .unwrap()
}

fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batches[0].schema(), None).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn column_i64(batches: &[RecordBatch], name: &str) -> Vec<Option<i64>> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect()
}

fn expected_counts(texts: &[String]) -> Vec<Option<i64>> {
    texts
        .iter()
        .map(|t| Some(t.split_whitespace().count() as i64))
        .collect()
}

#[test]
fn record_batches_map_with_renames_carried_columns_and_fixed_inputs_on_every_engine() {
    let t = texts(300);
    let bodies: ArrayRef = Arc::new(StringArray::from(t.clone()));
    let table = batch((0..300).collect(), bodies);
    for (name, engine) in common::engines() {
        let p = pipeline().with_shared_engine(engine);
        let out = p
            .map_table(
                Table::from_batches([table.clone()])
                    .rename([("body", "text")])
                    .carry(["id"])
                    .chunk_rows(64),
                Inputs::new().with("factor", 10i64),
                MapOptions::default(),
            )
            .unwrap()
            .collect()
            .unwrap();
        assert_eq!(out.len(), 5, "{name}: 300 rows in chunks of 64");
        let names: Vec<String> = out[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["id", "word_count", "scaled"], "{name}");
        assert_eq!(
            column_i64(&out, "id"),
            (0..300).map(Some).collect::<Vec<_>>(),
            "{name}: rows in table order"
        );
        let counts = expected_counts(&t);
        assert_eq!(column_i64(&out, "word_count"), counts, "{name}");
        let scaled: Vec<Option<i64>> = counts.iter().map(|c| c.map(|c| c * 10)).collect();
        assert_eq!(column_i64(&out, "scaled"), scaled, "{name}");
    }
}

#[test]
fn parquet_files_in_and_out_in_chunks_with_files_directories_and_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let t = texts(1000);
    // Three files of unequal sizes, each written in several row groups.
    let mut start = 0;
    for (i, len) in [400usize, 350, 250].into_iter().enumerate() {
        let parts: Vec<RecordBatch> = (start..start + len)
            .collect::<Vec<_>>()
            .chunks(100)
            .map(|rows| {
                batch(
                    rows.iter().map(|&r| r as i64).collect(),
                    Arc::new(StringArray::from(
                        rows.iter().map(|&r| t[r].clone()).collect::<Vec<_>>(),
                    )),
                )
            })
            .collect();
        write_parquet(&input.join(format!("part-{i}.parquet")), &parts);
        start += len;
    }
    std::fs::write(input.join("notes.txt"), "not a table").unwrap();
    for (name, engine) in common::engines() {
        for source in [input.clone(), input.join("part-*.parquet")] {
            let out_path = dir.path().join(format!("out-{name}.parquet"));
            let written = pipeline()
                .with_shared_engine(engine.clone())
                .map_table(
                    Table::parquet(&source)
                        .unwrap()
                        .rename([("body", "text")])
                        .carry(["id"])
                        .chunk_rows(128),
                    Inputs::new().with("factor", 2i64),
                    MapOptions::default().outputs(["word_count"]),
                )
                .unwrap()
                .write_parquet(&out_path)
                .unwrap();
            assert_eq!((written.rows, written.failed), (1000, 0), "{name}");
            let back = read_parquet(&out_path);
            let names: Vec<String> = back[0]
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            assert_eq!(names, ["id", "word_count"], "{name}");
            assert_eq!(
                column_i64(&back, "id"),
                (0..1000).map(Some).collect::<Vec<_>>()
            );
            assert_eq!(
                column_i64(&back, "word_count"),
                expected_counts(&t),
                "{name}"
            );
            // No temporary file is left beside the result.
            let stray: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
                .collect();
            assert!(stray.is_empty(), "{name}");
        }
    }
    let missing = Table::parquet(dir.path().join("nothing-*.parquet")).unwrap_err();
    assert!(matches!(missing, Error::TableIo { .. }), "{missing}");
}

#[test]
fn rows_from_a_table_and_values_from_a_vec_share_their_cache_entries() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let t = texts(200);
        let computed = Arc::new(Computed::default());
        let p = pipeline()
            .with_shared_engine(engine)
            .with_cache(DiskCache::new(dir.path()))
            .with_callback(computed.clone());
        // The first half from a Vec.
        p.map(
            Inputs::new()
                .with("text", t[..100].to_vec())
                .with("factor", 3i64),
            ["text"],
        )
        .unwrap();
        assert_eq!(computed.0.swap(0, Ordering::Relaxed), 100, "{name}");
        // All of it from a Parquet file: only the second half runs.
        let file = dir.path().join("in.parquet");
        write_parquet(
            &file,
            &[batch(
                (0..200).collect(),
                Arc::new(StringArray::from(t.clone())),
            )],
        );
        let out = p
            .map_table(
                Table::parquet(&file).unwrap().rename([("body", "text")]),
                Inputs::new().with("factor", 3i64),
                MapOptions::default(),
            )
            .unwrap()
            .collect()
            .unwrap();
        assert_eq!(
            computed.0.swap(0, Ordering::Relaxed),
            100,
            "{name}: the 100 new rows"
        );
        assert_eq!(
            column_i64(&out, "word_count"),
            expected_counts(&t),
            "{name}"
        );
    }
}

#[test]
fn an_arrow_array_maps_like_a_vec_of_its_values_on_every_engine() {
    for (name, engine) in common::engines() {
        let dir = tempfile::tempdir().unwrap();
        let t = texts(3000);
        let computed = Arc::new(Computed::default());
        let p = pipeline()
            .with_shared_engine(engine)
            .with_cache(DiskCache::new(dir.path()))
            .with_callback(computed.clone());
        // The first 1,000 from a Vec, then all 3,000 from an array: only
        // the 2,000 new ones run, and the results are the Vec's.
        let from_vec = p
            .map(
                Inputs::new()
                    .with("text", t[..1000].to_vec())
                    .with("factor", 2i64),
                ["text"],
            )
            .unwrap();
        assert_eq!(computed.0.swap(0, Ordering::Relaxed), 1000, "{name}");
        let array: ArrayRef = Arc::new(StringArray::from(t.clone()));
        let from_array = p
            .map(
                Inputs::new()
                    .with_array("text", array.clone())
                    .with("factor", 2i64),
                ["text"],
            )
            .unwrap();
        assert_eq!(computed.0.swap(0, Ordering::Relaxed), 2000, "{name}");
        let want: Vec<i64> = expected_counts(&t)
            .into_iter()
            .map(|c| c.unwrap() * 2)
            .collect();
        assert_eq!(from_array.values::<i64>("scaled").unwrap(), want, "{name}");
        assert_eq!(
            from_vec.values::<i64>("scaled").unwrap(),
            want[..1000],
            "{name}"
        );
        // Another data type, or a null where the input takes none: named
        // errors before anything runs.
        let wrong: ArrayRef = Arc::new(Int64Array::from(vec![1i64, 2]));
        let err = p
            .map(
                Inputs::new().with_array("text", wrong).with("factor", 2i64),
                ["text"],
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::ColumnType { input, node, .. } if input == "text" && node == "count"),
            "{name}: {err}"
        );
        let holed: ArrayRef = Arc::new(StringArray::from(vec![Some("a b"), None]));
        let err = p
            .map(
                Inputs::new().with_array("text", holed).with("factor", 2i64),
                ["text"],
            )
            .unwrap_err();
        assert!(
            matches!(&err, Error::NullValue { row: 1, input, .. } if input == "text"),
            "{name}: {err}"
        );
        assert_eq!(computed.0.load(Ordering::Relaxed), 0, "{name}");
    }
}

#[test]
fn columns_are_checked_against_their_inputs_before_anything_runs() {
    let p = pipeline();
    let fixed = || Inputs::new().with("factor", 1i64);
    // No column for `text`.
    let t = batch(vec![1], Arc::new(StringArray::from(vec!["a"])));
    let err = p
        .map_table(
            Table::from_batches([t.clone()]),
            fixed(),
            MapOptions::default(),
        )
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(matches!(err, Error::MissingColumn { .. }), "{message}");
    assert!(
        message.contains("`text`") && message.contains("`count`") && message.contains("id, body"),
        "{message}"
    );
    // A carried column that is not there.
    let err = p
        .map_table(
            Table::from_batches([t.clone()])
                .rename([("body", "text")])
                .carry(["key"]),
            fixed(),
            MapOptions::default(),
        )
        .err()
        .unwrap();
    assert!(err.to_string().contains("`key` to carry through"), "{err}");
    // Numbers where text is taken: both types named.
    let numbers =
        RecordBatch::try_from_iter([("text", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef)])
            .unwrap();
    let err = p
        .map_table(
            Table::from_batches([numbers]),
            fixed(),
            MapOptions::default(),
        )
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(matches!(err, Error::ColumnType { .. }), "{message}");
    assert!(
        message.contains("column `text` (Int32)")
            && message.contains("input `text` of `count`")
            && message.contains("Utf8"),
        "{message}"
    );
    // Other encodings of text, and narrower integers, are read as they are.
    for bodies in [
        Arc::new(LargeStringArray::from(vec!["a b", "c"])) as ArrayRef,
        Arc::new(StringViewArray::from(vec!["a b", "c"])) as ArrayRef,
    ] {
        let table = RecordBatch::try_from_iter([
            ("text", bodies),
            ("factor", Arc::new(Int32Array::from(vec![2, 3])) as ArrayRef),
        ])
        .unwrap();
        let out = p
            .map_table(
                Table::from_batches([table]),
                Inputs::new(),
                MapOptions::default(),
            )
            .unwrap()
            .collect()
            .unwrap();
        assert_eq!(column_i64(&out, "scaled"), [Some(4), Some(3)]);
    }
}

#[test]
fn nulls_and_node_failures_fail_their_rows_under_the_error_policy_on_every_engine() {
    let bodies: ArrayRef = Arc::new(StringArray::from(vec![
        Some("one two"),
        None,
        Some("poison here"),
        Some("three"),
        None,
    ]));
    let table = batch(vec![10, 11, 12, 13, 14], bodies);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nulls.parquet");
    write_parquet(&file, std::slice::from_ref(&table));
    let sources = [("batches", false), ("parquet", true)];
    for ((name, engine), (kind, parquet)) in common::engines()
        .into_iter()
        .flat_map(|e| sources.map(|s| (e.clone(), s)))
    {
        let name = format!("{name} over {kind}");
        let p = pipeline().with_shared_engine(engine);
        let source = || {
            let t = if parquet {
                Table::parquet(&file).unwrap()
            } else {
                Table::from_batches([table.clone()])
            };
            t.rename([("body", "text")]).carry(["id"]).chunk_rows(3)
        };
        // Stop: the first null is the error, naming column and row.
        let err = p
            .map_table(
                source(),
                Inputs::new().with("factor", 1i64),
                MapOptions::default(),
            )
            .unwrap()
            .collect()
            .unwrap_err();
        assert!(
            matches!(err, Error::NullValue { row: 1, .. }),
            "{name}: {err}"
        );
        assert!(
            err.to_string().contains("row 1: column `body` is null"),
            "{err}"
        );
        // Continue: every row is there; failed ones have null outputs and
        // say which node failed and why.
        let out = p
            .map_table(
                source(),
                Inputs::new().with("factor", 1i64),
                MapOptions::default().continue_on_error(),
            )
            .unwrap()
            .collect()
            .unwrap();
        assert_eq!(
            column_i64(&out, "id"),
            [10, 11, 12, 13, 14].map(Some),
            "{name}"
        );
        assert_eq!(
            column_i64(&out, "word_count"),
            [Some(2), None, None, Some(1), None],
            "{name}"
        );
        let text = |column: &str| -> Vec<Option<String>> {
            out.iter()
                .flat_map(|b| {
                    b.column_by_name(column)
                        .unwrap()
                        .as_string::<i32>()
                        .iter()
                        .map(|s| s.map(str::to_string))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let nodes = text("error_node");
        assert_eq!(
            nodes,
            [
                None,
                Some("count".into()),
                Some("count".into()),
                None,
                Some("count".into())
            ],
            "{name}"
        );
        let errors = text("error");
        assert!(
            errors[1]
                .as_deref()
                .unwrap()
                .contains("row 1: column `body` is null")
        );
        assert!(errors[4].as_deref().unwrap().contains("row 4"));
        assert!(
            errors[2].as_deref().unwrap().contains("cannot count"),
            "{errors:?}"
        );
    }
}

#[test]
fn an_empty_table_writes_an_empty_file_with_the_output_columns() {
    let dir = tempfile::tempdir().unwrap();
    let empty = batch(vec![], Arc::new(StringArray::from(Vec::<String>::new())));
    let file = dir.path().join("empty-in.parquet");
    write_parquet(&file, std::slice::from_ref(&empty));
    for (name, engine) in common::engines() {
        for parquet in [false, true] {
            let source = if parquet {
                Table::parquet(&file).unwrap()
            } else {
                Table::from_batches([empty.clone()])
            };
            let path = dir.path().join(format!("empty-{name}-{parquet}.parquet"));
            let written = pipeline()
                .with_shared_engine(engine.clone())
                .map_table(
                    source.rename([("body", "text")]).carry(["id"]),
                    Inputs::new().with("factor", 1i64),
                    MapOptions::default(),
                )
                .unwrap()
                .write_parquet(&path)
                .unwrap();
            assert_eq!(written.rows, 0, "{name}");
            let file = std::fs::File::open(&path).unwrap();
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
            let names: Vec<String> = builder
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            assert_eq!(
                names,
                ["id", "word_count", "scaled"],
                "{name}, parquet {parquet}"
            );
        }
    }
}

#[node(output = "slow_len")]
fn slow_len(text: &str) -> i64 {
    std::thread::sleep(std::time::Duration::from_millis(3));
    text.len() as i64
}

const TABLE_CHILD_DIR: &str = "HYPERNODES_TABLE_CHILD_DIR";
const TABLE_CHILD_ENGINE: &str = "HYPERNODES_TABLE_CHILD_ENGINE";
const SLOW_ROWS: usize = 600;

/// The engines the kill-and-resume test runs on, by name.
fn resume_engine(name: &str) -> Arc<dyn hypernodes::Engine> {
    match name {
        #[cfg(feature = "datafusion")]
        "datafusion" => Arc::new(
            hypernodes::engines::DataFusionEngine::new()
                .with_small_map(0)
                .with_target_partitions(2)
                .with_batch_size(20),
        ),
        _ => Arc::new(hypernodes::SeqEngine),
    }
}

fn resume_engines() -> Vec<&'static str> {
    if cfg!(feature = "datafusion") {
        vec!["seq", "datafusion"]
    } else {
        vec!["seq"]
    }
}

/// The slow pipeline over `dir/in.parquet` into `dir/out.parquet` on
/// `engine`, 20 rows at a time (a chunk, or a batch of the one plan),
/// flushing the cache after every 20 results.
fn slow_table_map(
    dir: &Path,
    engine: &str,
    counted: Option<Arc<SlowComputed>>,
) -> hypernodes::table::Written {
    let mut p = Pipeline::new([slow_len::node()])
        .unwrap()
        .with_shared_engine(resume_engine(engine))
        .with_cache(DiskCache::new(dir.join("cache")));
    if let Some(c) = counted {
        p = p.with_callback(c);
    }
    p.map_table(
        Table::parquet(dir.join("in.parquet"))
            .unwrap()
            .rename([("body", "text")])
            .carry(["id"])
            .chunk_rows(20),
        Inputs::new(),
        MapOptions::default().flush_every(20),
    )
    .unwrap()
    .write_parquet(dir.join("out.parquet"))
    .unwrap()
}

/// Not a test on its own: the child process of the kill-and-resume test,
/// which runs it with `HYPERNODES_TABLE_CHILD_DIR` set.
#[test]
fn table_child_helper() {
    if let Ok(dir) = std::env::var(TABLE_CHILD_DIR) {
        let engine = std::env::var(TABLE_CHILD_ENGINE).unwrap_or_default();
        slow_table_map(Path::new(&dir), &engine, None);
    }
}

#[test]
fn a_killed_table_map_resumes_with_only_the_rows_not_cached_and_a_complete_file() {
    for engine in resume_engines() {
        kill_and_resume(engine);
    }
}

fn kill_and_resume(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let t = texts(SLOW_ROWS);
    write_parquet(
        &dir.path().join("in.parquet"),
        &[batch(
            (0..SLOW_ROWS as i64).collect(),
            Arc::new(StringArray::from(t.clone())),
        )],
    );
    let cached = |dir: &Path| -> usize {
        DiskCache::new(dir.join("cache"))
            .stats()
            .map(|s| s.iter().map(|v| v.rows).sum())
            .unwrap_or(0)
    };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["table_child_helper", "--exact", "--test-threads=1"])
        .env(TABLE_CHILD_DIR, dir.path())
        .env(TABLE_CHILD_ENGINE, engine)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while cached(dir.path()) < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "{engine}: the child cached nothing in time"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "{engine}: the child ended before it was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = cached(dir.path());
    assert!(before < SLOW_ROWS, "{engine}: killed before the end");
    // The killed run left no output that looks complete.
    assert!(!dir.path().join("out.parquet").exists(), "{engine}");

    let counted = Arc::new(SlowComputed::default());
    let written = slow_table_map(dir.path(), engine, Some(counted.clone()));
    assert_eq!(
        counted.0.load(Ordering::Relaxed),
        SLOW_ROWS - before,
        "{engine}: only the rows not cached"
    );
    assert_eq!((written.rows, written.failed), (SLOW_ROWS, 0), "{engine}");
    let back = read_parquet(&dir.path().join("out.parquet"));
    assert_eq!(
        column_i64(&back, "id"),
        (0..SLOW_ROWS as i64).map(Some).collect::<Vec<_>>()
    );
    let lens: Vec<Option<i64>> = t.iter().map(|s| Some(s.len() as i64)).collect();
    assert_eq!(column_i64(&back, "slow_len"), lens);
    // Nothing half-written stays beside the result.
    let stray = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .count();
    assert!(stray <= 1, "at most the killed child's temporary file");
}

/// Counts the items `slow_len` computed.
#[derive(Default)]
struct SlowComputed(AtomicUsize);

impl Callback for SlowComputed {
    fn on_node_end(&self, _: &CallbackContext<'_>, node: &str, _: std::time::Duration) {
        if node == "slow_len" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn batches_from_a_reader_are_mapped_as_they_come_on_every_engine() {
    let t = texts(500);
    let schema = batch(vec![], Arc::new(StringArray::from(Vec::<String>::new()))).schema();
    for (name, engine) in common::engines() {
        // Five batches of 100 rows, made one at a time, cut into chunks
        // of 64.
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let source = t.clone();
        let reader = (0..5).map(move |b| {
            counter.fetch_add(1, Ordering::Relaxed);
            let rows = b * 100..(b + 1) * 100;
            Ok(batch(
                rows.clone().map(|r| r as i64).collect(),
                Arc::new(StringArray::from(source[rows].to_vec())),
            ))
        });
        let p = pipeline().with_shared_engine(engine);
        let mut map = p
            .map_table(
                Table::from_reader(schema.clone(), reader)
                    .rename([("body", "text")])
                    .carry(["id"])
                    .chunk_rows(64),
                Inputs::new().with("factor", 1i64),
                MapOptions::default(),
            )
            .unwrap();
        let first = map.next().unwrap().unwrap();
        assert_eq!(first.num_rows(), 64, "{name}");
        assert_eq!(
            made.load(Ordering::Relaxed),
            1,
            "{name}: read as the map goes"
        );
        let mut out = vec![first];
        out.extend(map.map(Result::unwrap));
        assert_eq!(
            column_i64(&out, "id"),
            (0..500).map(Some).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(
            column_i64(&out, "word_count"),
            expected_counts(&t),
            "{name}"
        );
    }
}

#[cfg(feature = "datafusion")]
#[test]
fn a_sql_query_over_a_parquet_file_is_a_table_to_map() {
    use hypernodes::engines::datafusion::prelude::{ParquetReadOptions, SessionContext};
    let dir = tempfile::tempdir().unwrap();
    let t = texts(300);
    let file = dir.path().join("docs.parquet");
    write_parquet(
        &file,
        &[batch(
            (0..300).collect(),
            Arc::new(StringArray::from(t.clone())),
        )],
    );
    let ctx = SessionContext::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let df = rt
        .block_on(async {
            ctx.register_parquet(
                "docs",
                file.to_str().unwrap(),
                ParquetReadOptions::default(),
            )
            .await?;
            ctx.sql("SELECT id, body AS text FROM docs WHERE id % 3 = 0 ORDER BY id")
                .await
        })
        .unwrap();
    let table = hypernodes::engines::dataframe_table(df).unwrap();
    for (name, engine) in common::engines().into_iter().take(1) {
        let out = pipeline()
            .with_shared_engine(engine)
            .map_table(
                table.clone().carry(["id"]),
                Inputs::new().with("factor", 1i64),
                MapOptions::default().outputs(["word_count"]),
            )
            .unwrap()
            .collect()
            .unwrap();
        let ids: Vec<Option<i64>> = (0..300).filter(|i| i % 3 == 0).map(Some).collect();
        assert_eq!(column_i64(&out, "id"), ids, "{name}");
        let counts: Vec<Option<i64>> = (0..300)
            .filter(|i| i % 3 == 0)
            .map(|i| Some(t[i as usize].split_whitespace().count() as i64))
            .collect();
        assert_eq!(column_i64(&out, "word_count"), counts, "{name}");
    }
}

#[test]
fn results_can_be_written_as_a_directory_of_files() {
    let dir = tempfile::tempdir().unwrap();
    let t = texts(250);
    let out = dir.path().join("out");
    let written = pipeline()
        .map_table(
            Table::from_batches([batch(
                (0..250).collect(),
                Arc::new(StringArray::from(t.clone())),
            )])
            .rename([("body", "text")])
            .carry(["id"])
            .chunk_rows(50),
            Inputs::new().with("factor", 1i64),
            MapOptions::default(),
        )
        .unwrap()
        .write_parquet_dir(&out, 100)
        .unwrap();
    let rows: Vec<usize> = written.iter().map(|w| w.rows).collect();
    assert_eq!(rows, [100, 100, 50]);
    let names: Vec<String> = written
        .iter()
        .map(|w| w.path.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "part-00000.parquet",
            "part-00001.parquet",
            "part-00002.parquet"
        ]
    );
    let back: Vec<RecordBatch> = written.iter().flat_map(|w| read_parquet(&w.path)).collect();
    assert_eq!(
        column_i64(&back, "id"),
        (0..250).map(Some).collect::<Vec<_>>()
    );
    assert_eq!(column_i64(&back, "word_count"), expected_counts(&t));
}

/// Counts maps started and the items they said they had.
#[derive(Default)]
struct Maps(std::sync::Mutex<Vec<usize>>);

impl Callback for Maps {
    fn on_map_start(&self, ctx: &CallbackContext<'_>, items: usize) {
        if ctx.items.is_empty() {
            self.0.lock().unwrap().push(items);
        }
    }
}

/// Three Parquet files of `id` (Int64), `body` (Utf8) and `factor` (Int32,
/// feeding an `i64` input), `rows` rows in all; their texts.
fn three_files(dir: &Path, rows: usize) -> Vec<String> {
    let t = texts(rows);
    let sizes = [rows / 2, rows / 3, rows - rows / 2 - rows / 3];
    let mut start = 0;
    for (i, len) in sizes.into_iter().enumerate() {
        let rows: Vec<usize> = (start..start + len).collect();
        let b = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|&r| r as i64))) as ArrayRef,
            ),
            (
                "body",
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|&r| t[r].as_str()),
                )) as ArrayRef,
            ),
            (
                "factor",
                Arc::new(Int32Array::from_iter_values(
                    rows.iter().map(|&r| (r % 7) as i32),
                )) as ArrayRef,
            ),
        ])
        .unwrap();
        write_parquet(&dir.join(format!("part-{i}.parquet")), &[b]);
        start += len;
    }
    t
}

#[test]
fn a_parquet_table_is_one_plan_on_datafusion_and_a_map_per_chunk_on_the_row_engines() {
    const ROWS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let t = three_files(dir.path(), ROWS);
    let counts = expected_counts(&t);
    let scaled: Vec<Option<i64>> = counts
        .iter()
        .enumerate()
        .map(|(r, c)| c.map(|c| c * (r % 7) as i64))
        .collect();
    for (name, engine) in common::engines() {
        let maps = Arc::new(Maps::default());
        let out = pipeline()
            .with_shared_engine(engine)
            .with_callback(maps.clone())
            .map_table(
                Table::parquet(dir.path())
                    .unwrap()
                    .rename([("body", "text")])
                    .carry(["id"])
                    .chunk_rows(4096),
                Inputs::new(),
                MapOptions::default(),
            )
            .unwrap()
            .collect()
            .unwrap();
        assert_eq!(
            column_i64(&out, "id"),
            (0..ROWS as i64).map(Some).collect::<Vec<_>>(),
            "{name}: rows in table order, across the files"
        );
        assert_eq!(column_i64(&out, "word_count"), counts, "{name}");
        assert_eq!(
            column_i64(&out, "scaled"),
            scaled,
            "{name}: Int32 read as i64"
        );
        let maps = maps.0.lock().unwrap().clone();
        if name.starts_with("datafusion") {
            assert_eq!(maps, [ROWS], "{name}: one plan over every row");
        } else {
            // Chunks of at most 4096 rows, cut at each file's end too.
            assert_eq!(
                maps,
                [4096, 4096, 1808, 4096, 2570, 3334],
                "{name}: a map per chunk"
            );
        }
    }
}

#[test]
fn a_table_map_dropped_midway_stops_and_keeps_what_it_computed() {
    const ROWS: usize = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    three_files(&input, ROWS);
    for (name, engine) in common::engines() {
        let cache = dir.path().join(format!("cache-{name}"));
        let computed = Arc::new(Computed::default());
        let p = pipeline()
            .with_shared_engine(engine)
            .with_cache(DiskCache::new(&cache))
            .with_callback(computed.clone());
        let table = {
            let input = input.clone();
            move || {
                Table::parquet(&input)
                    .unwrap()
                    .rename([("body", "text")])
                    .chunk_rows(1000)
            }
        };
        let table2 = table();
        let first_rows = common::deadline(120, "reading one batch, then dropping the map", {
            let p = p.clone();
            move || {
                let mut map = p
                    .map_table(table2, Inputs::new(), MapOptions::default())
                    .unwrap();
                let first = map.next().unwrap().unwrap();
                drop(map);
                first.num_rows()
            }
        });
        assert!(first_rows > 0, "{name}");
        let before = computed.0.swap(0, Ordering::Relaxed);
        assert!(before < ROWS, "{name}: stopped before the end ({before})");
        // What it computed was kept: the full run computes only the rest.
        let out = common::deadline(120, "the full run", move || {
            p.map_table(table(), Inputs::new(), MapOptions::default())
                .unwrap()
                .collect()
                .unwrap()
        });
        assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), ROWS);
        assert_eq!(
            computed.0.load(Ordering::Relaxed),
            ROWS - before,
            "{name}: only the rows not computed before"
        );
    }
}
