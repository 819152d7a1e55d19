//! cgroupfs v1 and v2: pod cgroup parents, the supervisors' own cgroup, stats and live updates.
