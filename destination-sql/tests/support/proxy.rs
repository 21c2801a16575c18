//! A TCP proxy on 127.0.0.1 that can drop every connection it carries, as a database
//! restart or a network failure would, without touching the real server.
