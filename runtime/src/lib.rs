//! The Destinations runtime.
