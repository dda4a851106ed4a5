//! Transports: byte streams over sockets and pipes (and later datagrams).

pub mod datagram;
pub(crate) mod lifecycle;
pub mod pipe;
pub mod stream;
mod write_buffer;
