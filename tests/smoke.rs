mod common;
use hypernodes::{Inputs, Pipeline, inputs, node};

#[node(output = "cleaned")]
fn clean(text: String) -> String {
    text.trim().to_lowercase()
}

#[node(output = "word_count")]
fn count(cleaned: &str) -> i64 {
    cleaned.split_whitespace().count() as i64
}

#[test]
fn smoke() {
    for (name, engine) in common::engines() {
        let p = Pipeline::new([count::node(), clean::node()])
            .unwrap()
            .with_shared_engine(engine);
        let out = p.run(inputs! {"text" => "  Hello World  "}).unwrap();
        assert_eq!(
            out.get::<String>("cleaned").unwrap(),
            "hello world",
            "{name}"
        );
        assert_eq!(*out.get::<i64>("word_count").unwrap(), 2);
        let r = p
            .map(Inputs::new().with("text", vec!["a b", "c"]), ["text"])
            .unwrap();
        assert_eq!(r.values::<i64>("word_count").unwrap(), vec![2, 1]);
        println!("{:?}", r.to_record_batch().unwrap());
    }
}
