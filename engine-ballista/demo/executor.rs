//! A Ballista executor that runs the demo nodes (`--scheduler HOST:PORT
//! --port N --grpc-port N --work-dir DIR --concurrency N --id ID`).

#[path = "nodes.rs"]
mod nodes;

fn main() -> Result<(), hypernodes_core::Error> {
    hypernodes_ballista::executor_main(nodes::registry())
}
