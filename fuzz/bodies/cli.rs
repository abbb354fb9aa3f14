//! The command line's parsers and writers that the fuzz targets reach, included from the
//! binary's sources (`src/cli/`, not part of the library) so that the very same code runs.

#![allow(dead_code, unused_imports)]

#[path = "../../src/cli/manifest.rs"]
pub mod manifest;
#[path = "../../src/cli/metadata.rs"]
pub mod metadata;
#[path = "../../src/cli/output.rs"]
pub mod output;
