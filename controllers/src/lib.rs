//! Controller-manager: not built yet; see the controllers issue.
