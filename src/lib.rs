//! Examples and integration tests of the saga workspace; see the README.
