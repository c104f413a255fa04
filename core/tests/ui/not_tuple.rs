use hypernodes_core::node;

#[node(output = ("a", "b"))]
fn one(x: i64) -> i64 {
    x
}

fn main() {}
