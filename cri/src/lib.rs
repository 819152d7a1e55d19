//! CRI v1 runtime (images, sandboxes, containers via libcontainer): not built yet; see the cri issue.
