//! Confidant's per-connection session state machine: keys per direction, counters, replay window, limits, key update.
