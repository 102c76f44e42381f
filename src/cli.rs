//! cli (to be built).
