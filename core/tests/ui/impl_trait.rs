use hypernodes_core::node;

#[node]
fn lengths(text: String) -> impl Iterator<Item = usize> {
    text.split(' ').map(str::len).collect::<Vec<_>>().into_iter()
}

fn main() {}
