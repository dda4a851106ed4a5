//! Transports: byte streams over sockets and pipes (and later datagrams).

pub mod datagram;
pub mod pipe;
pub mod stream;
mod write_buffer;
