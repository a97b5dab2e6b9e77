//! perry-verifier (being built in this session).
