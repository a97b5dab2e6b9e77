//! perry-profiles (being built in this session).
