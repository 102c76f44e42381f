//! input (to be built).
