//! link (to be built).
