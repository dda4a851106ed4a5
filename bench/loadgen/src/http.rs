//! Just enough HTTP/1.1 to count keep-alive responses: the status line and Content-Length.

/// The request sent for a response body of `size` bytes.
pub fn request(size: usize) -> Vec<u8> {
    format!("GET /{size} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ferroloop-loadgen\r\n\r\n")
        .into_bytes()
}

/// What the bytes received so far say about the response.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// The head is not complete yet.
    NeedHead,
    /// The head is complete; the whole response is this many bytes.
    Total(usize),
}

/// Longest head accepted before the response is declared broken.
const MAX_HEAD: usize = 16 * 1024;

/// Parses the head in `buf` (the bytes of one response received so far). Checks the status
/// is 200 and, when `expect_body` is given, that Content-Length equals it.
pub fn parse_head(buf: &[u8], expect_body: Option<usize>) -> Result<Progress, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(format!("no end of head in {} bytes", buf.len()));
        }
        return Ok(Progress::NeedHead);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "head is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status:?}"));
    }
    if code != "200" {
        return Err(format!("status {status:?}"));
    }
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            let value = value.trim();
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        }
    }
    let Some(length) = length else {
        return Err("response without Content-Length".into());
    };
    if let Some(expected) = expect_body {
        if length != expected {
            return Err(format!("Content-Length {length}, expected {expected}"));
        }
    }
    Ok(Progress::Total(end + 4 + length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_in_pieces() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nX: y\r\n\r\nhello";
        assert_eq!(parse_head(&response[..10], None), Ok(Progress::NeedHead));
        assert_eq!(
            parse_head(&response[..45], Some(5)),
            Ok(Progress::Total(response.len()))
        );
        assert!(parse_head(response, Some(6)).is_err());
        assert!(parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", None).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n", None).is_err());
        assert!(request(1024).starts_with(b"GET /1024 HTTP/1.1\r\n"));
    }
}
