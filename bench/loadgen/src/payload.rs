//! Echo payloads that change with every request, so a server that returns stale, mixed,
//! truncated or altered bytes is caught.
//!
//! Request `n` of connection `c` is a window of a fixed pseudo-random pattern, starting at
//! an offset that depends on `n` and `c`, with `c` and `n` written over its first 12
//! bytes (as far as the message is long). Building one costs a `memcpy`; checking the
//! echo is a `memcmp` of each received chunk against the same buffer.

/// Distinct window offsets; prime, so consecutive requests of a connection never share one.
const OFFSETS: usize = 251;

/// How a framed echo payload is cut into frames (`--frames`), for framed-protocol servers
/// that echo each frame as it came: the payload is `pipeline` frames of `frame` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frames {
    /// Each frame ends with `\n`, which occurs nowhere else.
    Lines,
    /// Each frame starts with its remaining length as 4 big-endian bytes.
    Len4,
}

/// The pattern every payload is cut from.
pub struct Pattern {
    bytes: Vec<u8>,
    size: usize,
    /// Framing applied to each payload and the size of one frame, if any.
    frames: Option<(Frames, usize)>,
}

impl Pattern {
    /// A pattern for messages of `size` bytes.
    pub fn new(size: usize) -> Pattern {
        // xorshift64*: deterministic, and no byte value dominates.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let bytes = (0..size + OFFSETS)
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect();
        Pattern {
            bytes,
            size,
            frames: None,
        }
    }

    /// A pattern for payloads of `pipeline` frames of `frame` bytes each, framed by
    /// `frames` (a frame must have room for its delimiter or its 4-byte header).
    pub fn framed(frames: Frames, frame: usize, pipeline: usize) -> Pattern {
        Pattern {
            frames: Some((frames, frame)),
            ..Pattern::new(frame * pipeline)
        }
    }

    /// Writes the framing over a payload: delimiters (and no stray `\n`) or headers.
    fn frame(&self, out: &mut [u8]) {
        let Some((frames, frame)) = self.frames else {
            return;
        };
        for chunk in out.chunks_mut(frame) {
            match frames {
                Frames::Lines => {
                    for byte in chunk.iter_mut() {
                        if *byte == b'\n' {
                            *byte = b' ';
                        }
                    }
                    if let Some(last) = chunk.last_mut() {
                        *last = b'\n';
                    }
                }
                Frames::Len4 => {
                    let length = (chunk.len().saturating_sub(4) as u32).to_be_bytes();
                    let n = chunk.len().min(4);
                    chunk[..n].copy_from_slice(&length[..n]);
                }
            }
        }
    }

    /// Writes the payload of request `counter` on connection `conn` into `out`.
    pub fn fill(&self, conn: u32, counter: u64, out: &mut Vec<u8>) {
        let offset = (counter as usize)
            .wrapping_mul(7)
            .wrapping_add(conn as usize)
            % OFFSETS;
        out.clear();
        out.extend_from_slice(&self.bytes[offset..offset + self.size]);
        let mut header = [0u8; 12];
        header[..4].copy_from_slice(&conn.to_le_bytes());
        header[4..].copy_from_slice(&counter.to_le_bytes());
        let n = header.len().min(out.len());
        out[..n].copy_from_slice(&header[..n]);
        self.frame(out);
    }
}

/// Checks that `chunk`, received at byte `at` of the reply, matches what was sent.
/// Returns a description of the first difference.
pub fn verify(sent: &[u8], at: usize, chunk: &[u8]) -> Result<(), String> {
    let end = at + chunk.len();
    if end > sent.len() {
        return Err(format!(
            "echo longer than the request: {end} bytes received for {} sent",
            sent.len()
        ));
    }
    if sent[at..end] == *chunk {
        return Ok(());
    }
    let first = sent[at..end]
        .iter()
        .zip(chunk)
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    Err(format!(
        "echoed bytes differ at offset {} of {}: sent {:#04x}, got {:#04x}",
        at + first,
        sent.len(),
        sent[at + first],
        chunk[first]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_payloads() {
        let mut out = Vec::new();
        Pattern::framed(Frames::Lines, 100, 5).fill(10, 10, &mut out);
        assert_eq!(out.len(), 500);
        let ends: Vec<usize> = (0..500).filter(|&i| out[i] == b'\n').collect();
        assert_eq!(ends, vec![99, 199, 299, 399, 499]);
        Pattern::framed(Frames::Len4, 100, 3).fill(1, 2, &mut out);
        for frame in out.chunks(100) {
            assert_eq!(frame[..4], 96u32.to_be_bytes());
        }
    }

    #[test]
    fn payloads_differ_between_requests_and_connections() {
        let pattern = Pattern::new(1024);
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        pattern.fill(0, 0, &mut a);
        pattern.fill(0, 1, &mut b);
        pattern.fill(1, 0, &mut c);
        assert_eq!(a.len(), 1024);
        assert_ne!(a, b);
        assert_ne!(a, c);
        // Not only the header: the body moves too.
        assert_ne!(a[12..], b[12..]);
        let mut again = Vec::new();
        pattern.fill(0, 1, &mut again);
        assert_eq!(again, b);
    }

    #[test]
    fn verify_accepts_the_echo_in_pieces_and_catches_corruption() {
        let pattern = Pattern::new(300);
        let mut sent = Vec::new();
        pattern.fill(3, 42, &mut sent);
        let echo = sent.clone();
        assert!(verify(&sent, 0, &echo[..100]).is_ok());
        assert!(verify(&sent, 100, &echo[100..]).is_ok());

        let mut bad = echo.clone();
        bad[150] ^= 1;
        let err = verify(&sent, 100, &bad[100..]).unwrap_err();
        assert!(err.contains("offset 150"), "{err}");

        // The previous request's echo (stale data) is rejected.
        let mut previous = Vec::new();
        pattern.fill(3, 41, &mut previous);
        assert!(verify(&sent, 0, &previous).is_err());

        // More bytes than were sent.
        assert!(verify(&sent, 200, &echo[..101]).is_err());
    }

    #[test]
    fn tiny_messages_carry_a_partial_header() {
        let pattern = Pattern::new(4);
        let mut out = Vec::new();
        pattern.fill(0x0102_0304, 9, &mut out);
        assert_eq!(out, [4, 3, 2, 1]);
    }
}
