//! api (to be built).
