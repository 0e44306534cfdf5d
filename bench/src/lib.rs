//! Roomcast load generator (work in progress).
