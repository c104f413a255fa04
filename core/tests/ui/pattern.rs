use hypernodes_core::node;

#[node]
fn first((a, _b): (i64, i64)) -> i64 {
    a
}

fn main() {}
