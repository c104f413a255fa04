//! A Ballista scheduler that plans maps of the demo nodes
//! (`--bind HOST --port N`; 127.0.0.1:50050 unless given).

#[path = "nodes.rs"]
mod nodes;

fn main() -> Result<(), hypernodes_core::Error> {
    hypernodes_ballista::scheduler_main(nodes::registry())
}
