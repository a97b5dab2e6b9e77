//! perry-runtime (being built in this session).
