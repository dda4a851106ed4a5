//! Transports: byte streams over sockets and pipes, and datagrams. `lifecycle` holds what
//! the cores share; each transport's own file holds what asyncio does differently for it.

pub mod datagram;
mod exported_buffer;
pub(crate) mod lifecycle;
pub mod pipe;
mod sized_read;
pub mod stream;
pub mod tls_pump;
mod write_buffer;
