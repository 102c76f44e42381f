//! otp (to be built).
