use hypernodes_core::node;

#[node(outputs = "x")]
fn f(a: i64) -> i64 {
    a
}

fn main() {}
