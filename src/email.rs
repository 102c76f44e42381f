//! email (to be built).
