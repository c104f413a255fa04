use hypernodes_core::node;

#[node]
fn log(text: String) {
    println!("{text}");
}

fn main() {}
