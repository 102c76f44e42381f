//! config (to be built).
