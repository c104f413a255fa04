use hypernodes_core::node;

#[node]
fn identity<T: Clone>(x: T) -> T {
    x
}

fn main() {}
