//! The `roomcast-operator` binary.

fn main() {}
