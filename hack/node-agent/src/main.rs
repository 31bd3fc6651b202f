//! Placeholder until the node agent lands.
fn main() {}
