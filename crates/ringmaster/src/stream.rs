//! Children's output: pipes read line by line into a per-watcher sink (a file rotated by size
//! and/or time, or ringmaster's own stdout/stderr), with the last lines kept for `ringctl tail`.
