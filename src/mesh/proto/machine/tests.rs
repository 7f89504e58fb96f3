//! Unit tests of the mesh core.
use super::*;
