//! Transports: byte streams over sockets (and later pipes and datagrams).

pub mod datagram;
pub mod stream;
mod write_buffer;
