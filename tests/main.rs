//! End-to-end tests of the `volley` binary over real sockets on loopback.

mod resolve;
