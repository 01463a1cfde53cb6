//! Empty: see Cargo.toml (this package only pins the crate that ships Forgejo's API description).
