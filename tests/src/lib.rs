//! End-to-end test support: programmable upstreams and raw HTTP clients on 127.0.0.1.
