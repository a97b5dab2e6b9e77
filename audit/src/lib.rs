//! perry-audit (being built in this session).
