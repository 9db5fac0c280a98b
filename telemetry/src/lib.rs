//! coremesh-telemetry (placeholder, filled by its issue).
