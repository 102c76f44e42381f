//! state (to be built).
