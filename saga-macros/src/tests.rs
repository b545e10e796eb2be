//! Unit tests of the expansion on token streams: error text and count, and robustness.
