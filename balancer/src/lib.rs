//! coremesh-balancer (placeholder, filled by its issue).
