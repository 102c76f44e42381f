//! progress (to be built).
