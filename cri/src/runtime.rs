//! The CRI RuntimeService: sandboxes and containers, their state kept across restarts.
