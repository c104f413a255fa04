use hypernodes_core::node;

#[node]
fn push(items: &mut Vec<i64>) -> usize {
    items.push(1);
    items.len()
}

fn main() {}
