//! Just enough WebSocket (RFC 6455) for an echo client: the opening handshake, masked
//! binary frames out, and the unmasked frame a server sends back.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The GUID RFC 6455 appends to the key before hashing it into `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Longest handshake response accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The first byte of a final, unfragmented binary frame.
const FIN_BINARY: u8 = 0x82;

/// Performs the opening handshake on a blocking, connected `stream` (path `/`) and checks
/// the server's `101` answer and its `Sec-WebSocket-Accept`. `nonce` makes the key.
pub fn handshake(stream: &mut TcpStream, host: &str, nonce: u64) -> io::Result<()> {
    let mut raw_key = [0u8; 16];
    raw_key[..8].copy_from_slice(&nonce.to_le_bytes());
    raw_key[8..].copy_from_slice(&nonce.rotate_left(29).wrapping_mul(0x9E37).to_be_bytes());
    let key = base64(&raw_key);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         User-Agent: ferroloop-loadgen\r\n\r\n"
    );
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(request.as_bytes())?;
    // Byte by byte, so nothing after the head is consumed: the server sends nothing more
    // before the first message, and anything it does send is then seen as a bad echo.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(bad("handshake response head too long"));
        }
        match stream.read(&mut byte)? {
            0 => return Err(bad("server closed during the WebSocket handshake")),
            _ => head.push(byte[0]),
        }
    }
    stream.set_read_timeout(None)?;
    check_response(&head, &accept_for(&key)).map_err(bad)
}

fn bad(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// The `Sec-WebSocket-Accept` a server must answer to `key`.
pub fn accept_for(key: &str) -> String {
    base64(&sha1(format!("{key}{ACCEPT_GUID}").as_bytes()))
}

/// Checks a handshake response head: status 101 and the expected accept value.
fn check_response(head: &[u8], accept: &str) -> Result<(), String> {
    let text = std::str::from_utf8(head).map_err(|_| "handshake head is not UTF-8")?;
    let mut lines = text.trim_end().split("\r\n");
    let status = lines.next().unwrap_or("");
    if status.split(' ').nth(1) != Some("101") {
        return Err(format!("WebSocket handshake answered {status:?}"));
    }
    let got = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, value)| value.trim());
    match got {
        Some(value) if value == accept => Ok(()),
        Some(value) => Err(format!(
            "Sec-WebSocket-Accept {value:?}, expected {accept:?}"
        )),
        None => Err("handshake response without Sec-WebSocket-Accept".into()),
    }
}

/// Appends a frame header for a binary message of `len` bytes to `out`, with the mask
/// bit set when `mask` is given (a client's frames) and followed by the mask key.
fn header(len: usize, mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(FIN_BINARY);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// Writes into `frame` the masked client frame carrying `payload`, and into `reply` the
/// exact bytes the server's echo must be: an unmasked binary frame of the same payload.
pub fn encode(payload: &[u8], mask: [u8; 4], frame: &mut Vec<u8>, reply: &mut Vec<u8>) {
    frame.clear();
    header(payload.len(), Some(mask), frame);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    reply.clear();
    header(payload.len(), None, reply);
    reply.extend_from_slice(payload);
}

/// SHA-1 (FIPS 180-4) of `data`; only for the handshake's accept value.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let next = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = next;
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e]) {
            *state = state.wrapping_add(value);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let bits = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(bits >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_value_of_the_rfc_example() {
        // RFC 6455, section 1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        let empty = sha1(b"");
        assert_eq!(empty[..4], [0xda, 0x39, 0xa3, 0xee]);
    }

    #[test]
    fn handshake_responses_are_checked() {
        let accept = accept_for("dGhlIHNhbXBsZSBub25jZQ==");
        let good = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nsec-websocket-accept: {accept}\r\n\r\n");
        assert_eq!(check_response(good.as_bytes(), &accept), Ok(()));
        let wrong = good.replace(&accept, "AAAA");
        assert!(check_response(wrong.as_bytes(), &accept).is_err());
        assert!(check_response(b"HTTP/1.1 400 Bad Request\r\n\r\n", &accept).is_err());
        assert!(check_response(b"HTTP/1.1 101 OK\r\n\r\n", &accept).is_err());
    }

    #[test]
    fn frames_of_every_length_encoding() {
        let (mut frame, mut reply) = (Vec::new(), Vec::new());
        let mask = [1, 2, 3, 4];
        encode(b"abc", mask, &mut frame, &mut reply);
        assert_eq!(
            frame,
            [0x82, 0x83, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]
        );
        assert_eq!(reply, [0x82, 3, b'a', b'b', b'c']);
        encode(&[7; 1024], mask, &mut frame, &mut reply);
        assert_eq!(frame[..4], [0x82, 0x80 | 126, 4, 0]);
        assert_eq!(reply[..4], [0x82, 126, 4, 0]);
        assert_eq!(reply.len(), 4 + 1024);
        encode(&[7; 70_000], mask, &mut frame, &mut reply);
        assert_eq!(reply[..2], [0x82, 127]);
        assert_eq!(reply[2..10], 70_000u64.to_be_bytes());
        assert_eq!(frame.len(), 2 + 8 + 4 + 70_000);
    }
}
