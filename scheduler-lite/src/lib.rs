//! Scheduling framework and default plugins: not built yet; see the scheduler-lite issue.
