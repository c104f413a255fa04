use hypernodes_core::node;

#[node(output = ("quotient", "remainder", "extra"))]
fn divmod(a: i64, b: i64) -> (i64, i64) {
    (a / b, a % b)
}

fn main() {}
