pub use hypernodes_core::*;
