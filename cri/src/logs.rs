//! The CRI container log format (`<timestamp> <stream> <P|F> <line>`) and its rotation.
