//! The built-in LeadSquared simulator (to be built).
