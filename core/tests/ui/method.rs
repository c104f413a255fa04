use hypernodes_core::node;

struct Counter;

impl Counter {
    #[node]
    fn count(&self, text: String) -> usize {
        text.len()
    }
}

fn main() {}
