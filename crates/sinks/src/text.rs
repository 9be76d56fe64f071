//! Small I/O-free helpers the payload builders share.
