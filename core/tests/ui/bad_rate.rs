use hypernodes_core::node;

#[node(output = "y", max_per_second = 0)]
async fn ask(x: i64) -> i64 {
    x * 2
}

#[node(output = "z", concurrency = 0)]
async fn ask_none(x: i64) -> i64 {
    x * 2
}

fn main() {}
