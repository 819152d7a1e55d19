//! PLACEHOLDER: being written (replace this header).
