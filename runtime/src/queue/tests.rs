//! Tests of the queue module.
