use hypernodes_core::node;

#[node(output = "y", concurrency = 8)]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {}
