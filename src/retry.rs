//! retry (to be built).
