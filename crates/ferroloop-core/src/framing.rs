//! Splitting a byte stream into frames: the state machine behind `ferroloop.framing`.
//!
//! Most network protocols frame their messages in one of three ways: a delimiter ends each
//! frame (`\r\n` in Redis inline commands, SMTP, IRC, memcached's text protocol), a length
//! field in a small header gives the size of what follows (PostgreSQL, Kafka, most binary
//! RPC), or every frame has the same size. A [`Framer`] holds the bytes a connection has
//! received but not yet delivered, and hands out complete frames one at a time.
//!
//! The buffer is written in place: the transport `recv`s straight into [`Framer::spare`]
//! and reports the count with [`Framer::commit`], so a read costs no copy before the
//! frames themselves are copied out. Frames are returned as slices of that buffer, valid
//! until the framer is next changed.
//!
//! Every framing has a maximum frame size. A frame that would exceed it is an error as soon
//! as that is known (at the length field, or once more bytes than a frame may hold arrived
//! without a delimiter), so a peer can never make the buffer grow without bound. After an
//! error the framer is *poisoned*: it reports the same error again and hands out nothing.
//!
//! Not promised: the framer does not look at frame contents, and a delimiter is found only
//! as a whole (a partial delimiter at the end of the buffer waits for more bytes).

use std::fmt;
use std::ops::Range;

/// How a [`Framer`] finds where one frame ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Frames end with `delimiter` (never empty); delivered without it unless `keep`.
    Delimiter {
        /// The byte string that ends each frame.
        delimiter: Vec<u8>,
        /// Whether a delivered frame still ends with the delimiter.
        keep: bool,
    },
    /// Frames start with a header that holds the length of what follows.
    LengthPrefixed(LengthField),
    /// Every frame has exactly this many bytes (at least one).
    FixedSize(usize),
}

/// Where a length-prefixed frame's length is and what it counts, as in tokio-util's
/// `LengthDelimitedCodec`.
///
/// A frame is `offset` bytes of header, the length field of `size` bytes, then
/// `value + adjustment` more bytes, where `value` is the field read as an unsigned integer.
/// The delivered frame is the whole frame minus its first `strip` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LengthField {
    /// Header bytes before the length field.
    pub offset: usize,
    /// Width of the length field in bytes: 1, 2, 4 or 8.
    pub size: usize,
    /// Byte order of the length field.
    pub big_endian: bool,
    /// Added to the field's value to get the number of bytes after the field (negative
    /// when the field counts the header too).
    pub adjustment: i64,
    /// Bytes removed from the front of each delivered frame; at most `offset + size`.
    pub strip: usize,
}

impl LengthField {
    /// A plain prefix: a `size`-byte big-endian length at offset 0 counting the payload
    /// alone, stripped from the delivered frame.
    pub fn prefix(size: usize) -> Self {
        LengthField {
            offset: 0,
            size,
            big_endian: true,
            adjustment: 0,
            strip: size,
        }
    }

    /// Bytes up to the end of the length field.
    pub fn header_len(&self) -> usize {
        self.offset + self.size
    }

    /// The field's value in `header` (at least [`LengthField::header_len`] bytes).
    fn value(&self, header: &[u8]) -> u64 {
        let field = &header[self.offset..self.offset + self.size];
        let mut value = 0u64;
        if self.big_endian {
            for &byte in field {
                value = (value << 8) | u64::from(byte);
            }
        } else {
            for &byte in field.iter().rev() {
                value = (value << 8) | u64::from(byte);
            }
        }
        value
    }
}

impl Framing {
    /// Appends `payload` to `out` as one frame of this framing: followed by the delimiter,
    /// after its length field, or as it is for a fixed size. Not checked: that a delimited
    /// payload holds no delimiter (the receiver would cut the frame there).
    ///
    /// A length-prefixed frame can be written only when the header is the length field
    /// alone and is stripped (`offset == 0`, `strip == size`): other headers hold fields
    /// only the application knows.
    pub fn encode(
        &self,
        payload: &[u8],
        max_frame_size: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.header(payload.len(), max_frame_size, out)?;
        let trailer = self.trailer();
        out.reserve(payload.len() + trailer.len());
        out.extend_from_slice(payload);
        out.extend_from_slice(trailer);
        Ok(())
    }

    /// Appends to `out` what goes on the wire before a payload of `len` bytes (the length
    /// field, or nothing), after the checks of [`Framing::encode`]; the payload and then
    /// [`Framing::trailer`] follow. For scatter/gather writes that keep the payload where
    /// it is.
    pub fn header(
        &self,
        len: usize,
        max_frame_size: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if len > max_frame_size {
            return Err(EncodeError::TooLarge);
        }
        match self {
            Framing::Delimiter { .. } => {}
            Framing::LengthPrefixed(field) => {
                if field.offset != 0 || field.strip != field.size {
                    return Err(EncodeError::HeaderNotLengthAlone);
                }
                let value = i128::try_from(len).unwrap_or(i128::MAX) - i128::from(field.adjustment);
                let fits = field.size == 8 || value < 1i128 << (8 * field.size);
                let value = match u64::try_from(value) {
                    Ok(value) if fits => value,
                    _ => return Err(EncodeError::LengthDoesNotFit),
                };
                let bytes = if field.big_endian {
                    value.to_be_bytes()
                } else {
                    value.to_le_bytes()
                };
                let field_bytes = if field.big_endian {
                    &bytes[8 - field.size..]
                } else {
                    &bytes[..field.size]
                };
                out.extend_from_slice(field_bytes);
            }
            Framing::FixedSize(n) => {
                if len != *n {
                    return Err(EncodeError::WrongSize);
                }
            }
        }
        Ok(())
    }

    /// What goes on the wire after a payload: the delimiter, or nothing.
    pub fn trailer(&self) -> &[u8] {
        match self {
            Framing::Delimiter { delimiter, .. } => delimiter,
            Framing::LengthPrefixed(_) | Framing::FixedSize(_) => &[],
        }
    }
}

/// Why [`Framing::encode`] cannot write a payload as a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload is longer than the maximum frame size.
    TooLarge,
    /// A length-prefixed framing whose header has more than the length field.
    HeaderNotLengthAlone,
    /// The length (after the adjustment) is negative or too large for the field.
    LengthDoesNotFit,
    /// A fixed-size framing and a payload of another size.
    WrongSize,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::TooLarge => "the frame is longer than max_frame_size",
            EncodeError::HeaderNotLengthAlone => {
                "write_chunk needs a header that is the length field alone (offset 0, stripped)"
            }
            EncodeError::LengthDoesNotFit => "the frame's length does not fit the length field",
            EncodeError::WrongSize => "the frame does not have the fixed frame size",
        })
    }
}

impl std::error::Error for EncodeError {}

/// Why a framing description was refused by [`Framer::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub &'static str);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A stream that cannot be split any further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A frame is longer than the maximum. `size` is its length when the header gave it,
    /// or the number of bytes buffered without a delimiter.
    TooLarge {
        /// The frame's length, or a lower bound of it.
        size: u64,
        /// The framer's maximum frame size.
        max: usize,
    },
    /// A length field plus the adjustment came out negative.
    NegativeLength {
        /// The length field's value plus the adjustment.
        length: i128,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { size, max } => {
                write!(f, "frame of {size} bytes exceeds max_frame_size {max}")
            }
            FrameError::NegativeLength { length } => {
                write!(f, "length field gives a negative frame length ({length})")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Splits the bytes of one connection into frames (see the module documentation).
#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    max_frame_size: usize,
    /// Storage; the buffered bytes are `buf[start..end]`, `buf[end..]` is room to read into.
    buf: Vec<u8>,
    /// Start of the first byte not yet handed out.
    start: usize,
    /// End of the bytes received.
    end: usize,
    /// Delimiter framing: bytes from `start` already searched without finding the
    /// delimiter's first position, so a search resumes instead of rescanning.
    scanned: usize,
    /// The error that stopped the framer, reported again by every later call.
    poisoned: Option<FrameError>,
}

/// Room a framer keeps at least when it shrinks its buffer back after a large frame.
const SHRINK_TO: usize = 64 * 1024;

impl Framer {
    /// A framer for `framing` with frames of at most `max_frame_size` bytes (for a
    /// delimiter, not counting it; for a length prefix, the bytes after the length field).
    pub fn new(framing: Framing, max_frame_size: usize) -> Result<Self, ConfigError> {
        match &framing {
            Framing::Delimiter { delimiter, .. } if delimiter.is_empty() => {
                return Err(ConfigError("the delimiter must not be empty"));
            }
            Framing::LengthPrefixed(field) => {
                if ![1, 2, 4, 8].contains(&field.size) {
                    return Err(ConfigError("the length field must be 1, 2, 4 or 8 bytes"));
                }
                if field.strip > field.header_len() {
                    return Err(ConfigError(
                        "strip must not exceed the header (offset + length field size)",
                    ));
                }
            }
            Framing::FixedSize(0) => return Err(ConfigError("the frame size must be positive")),
            Framing::FixedSize(n) if *n > max_frame_size => {
                return Err(ConfigError("the frame size exceeds max_frame_size"));
            }
            _ => {}
        }
        Ok(Framer {
            framing,
            max_frame_size,
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            poisoned: None,
        })
    }

    /// The framing this framer splits by.
    pub fn framing(&self) -> &Framing {
        &self.framing
    }

    /// The maximum frame size.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// The bytes received and not yet handed out.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Appends `data` to the buffered bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.spare(data.len())[..data.len()].copy_from_slice(data);
        self.commit(data.len());
    }

    /// Puts `data` in front of the buffered bytes (bytes a raw-mode reader hands back).
    pub fn unread(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut joined = Vec::with_capacity(data.len() + self.end - self.start + SHRINK_TO);
        joined.extend_from_slice(data);
        joined.extend_from_slice(self.buffered());
        self.end = joined.len();
        self.start = 0;
        self.scanned = 0;
        self.buf = joined;
    }

    /// At least `min` bytes of room after the buffered bytes, to receive into; the bytes
    /// written there count once [`Framer::commit`] is called.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > 4 * SHRINK_TO.max(min) {
                self.buf = Vec::new();
            }
        }
        if self.buf.len() - self.end < min {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < min {
                self.buf.resize(self.end + min, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Frees the buffer when nothing is buffered and it holds more than `keep` bytes of
    /// room, so an idle connection costs no buffer (a busy one allocates per read).
    pub fn release_if_empty(&mut self, keep: usize) {
        if self.start == self.end && self.buf.len() > keep {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
        }
    }

    /// Counts `n` bytes written at the front of [`Framer::spare`] as received.
    ///
    /// # Panics
    /// If `n` is more than the room `spare` gave.
    pub fn commit(&mut self, n: usize) {
        assert!(
            self.end + n <= self.buf.len(),
            "commit beyond the spare room"
        );
        self.end += n;
    }

    /// Hands out everything buffered (for a reader that switched to raw bytes), and
    /// forgets an error found in those bytes: they were not frames after all. The slice
    /// is valid until the framer is next changed.
    pub fn take_buffered(&mut self) -> &[u8] {
        let range = self.start..self.end;
        self.start = self.end;
        self.scanned = 0;
        self.poisoned = None;
        &self.buf[range]
    }

    /// The total length of the frame being received, when the buffered bytes tell it (a
    /// length-prefixed frame whose header arrived, or a fixed-size frame); for asyncio's
    /// `IncompleteReadError.expected`.
    pub fn expected(&self) -> Option<usize> {
        match &self.framing {
            Framing::Delimiter { .. } => None,
            Framing::FixedSize(n) => Some(*n),
            Framing::LengthPrefixed(field) => {
                let buffered = self.buffered();
                if buffered.len() < field.header_len() {
                    return None;
                }
                let length = i128::from(field.value(buffered)) + i128::from(field.adjustment);
                usize::try_from(length)
                    .ok()
                    .and_then(|n| n.checked_add(field.header_len()))
            }
        }
    }

    /// The next complete frame, consumed; `Ok(None)` until more bytes arrive. The slice is
    /// valid until the framer is next changed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if let Some(err) = &self.poisoned {
            return Err(err.clone());
        }
        let found = match &self.framing {
            Framing::Delimiter { delimiter, keep } => self.find_delimited(delimiter.len(), *keep),
            Framing::LengthPrefixed(field) => self.find_length_prefixed(field),
            Framing::FixedSize(n) => Ok(self.find_fixed(*n)),
        };
        match found {
            Ok(Some((frame, consumed))) => {
                self.start += consumed;
                self.scanned = 0;
                Ok(Some(&self.buf[frame]))
            }
            Ok(None) => Ok(None),
            Err(err) => {
                self.poisoned = Some(err.clone());
                Err(err)
            }
        }
    }

    /// The frame's range in `buf` and how many bytes it consumes, for a delimiter.
    fn find_delimited(
        &mut self,
        delim_len: usize,
        keep: bool,
    ) -> Result<Option<(Range<usize>, usize)>, FrameError> {
        let Framing::Delimiter { delimiter, .. } = &self.framing else {
            unreachable!("find_delimited on another framing");
        };
        let buffered = &self.buf[self.start..self.end];
        match find(buffered, delimiter, self.scanned) {
            Some(at) => {
                if at > self.max_frame_size {
                    return Err(self.too_large(at as u64));
                }
                let end = if keep { at + delim_len } else { at };
                Ok(Some((self.start..self.start + end, at + delim_len)))
            }
            None => {
                // A delimiter may still begin in the last `delim_len - 1` bytes.
                self.scanned = buffered.len().saturating_sub(delim_len - 1);
                if buffered.len() > self.max_frame_size + delim_len - 1 {
                    return Err(self.too_large(buffered.len() as u64));
                }
                Ok(None)
            }
        }
    }

    fn find_length_prefixed(
        &self,
        field: &LengthField,
    ) -> Result<Option<(Range<usize>, usize)>, FrameError> {
        let buffered = self.buffered();
        let header = field.header_len();
        if buffered.len() < header {
            return Ok(None);
        }
        let value = field.value(buffered);
        let length = i128::from(value) + i128::from(field.adjustment);
        if length < 0 {
            return Err(FrameError::NegativeLength { length });
        }
        if length > self.max_frame_size as i128 {
            return Err(self.too_large(u64::try_from(length).unwrap_or(u64::MAX)));
        }
        let total = header + length as usize;
        if buffered.len() < total {
            return Ok(None);
        }
        Ok(Some((self.start + field.strip..self.start + total, total)))
    }

    fn find_fixed(&self, n: usize) -> Option<(Range<usize>, usize)> {
        (self.end - self.start >= n).then(|| (self.start..self.start + n, n))
    }

    fn too_large(&self, size: u64) -> FrameError {
        FrameError::TooLarge {
            size,
            max: self.max_frame_size,
        }
    }
}

/// The position of the first `needle` in `haystack` at or after `from`: candidates are
/// found with `memchr` on the needle's first byte (the C library's vectorised search;
/// lines of a few KiB are scanned in a fraction of the time a byte loop takes).
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let candidate = at + memchr(first, &haystack[at..=haystack.len() - needle.len()])?;
        if haystack[candidate + 1..candidate + needle.len()] == *rest {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

/// The index of the first `byte` in `haystack`.
fn memchr(byte: u8, haystack: &[u8]) -> Option<usize> {
    // SAFETY: `haystack` is a valid readable region of `haystack.len()` bytes; memchr
    // reads at most that many and returns a pointer into it or null.
    let found = unsafe {
        libc::memchr(
            haystack.as_ptr().cast(),
            libc::c_int::from(byte),
            haystack.len(),
        )
    };
    if found.is_null() {
        None
    } else {
        Some(found as usize - haystack.as_ptr() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize) -> Framer {
        Framer::new(
            Framing::Delimiter {
                delimiter: b"\r\n".to_vec(),
                keep: false,
            },
            max,
        )
        .unwrap()
    }

    /// Every frame the buffered bytes hold, as owned vectors.
    fn drain(framer: &mut Framer) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut frames = Vec::new();
        while let Some(frame) = framer.next_frame()? {
            frames.push(frame.to_vec());
        }
        Ok(frames)
    }

    /// Feeds `stream` in two reads split at every position (and byte by byte) and checks
    /// that the frames are always `expected`.
    fn check_every_split(make: impl Fn() -> Framer, stream: &[u8], expected: &[&[u8]]) {
        for split in 0..=stream.len() {
            let mut framer = make();
            let mut frames = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                framer.extend(part);
                frames.extend(drain(&mut framer).unwrap());
            }
            assert_eq!(frames, expected, "split at {split}");
            assert!(framer.is_empty(), "split at {split}");
        }
        let mut framer = make();
        let mut frames = Vec::new();
        for byte in stream {
            framer.extend(std::slice::from_ref(byte));
            frames.extend(drain(&mut framer).unwrap());
        }
        assert_eq!(frames, expected, "byte by byte");
    }

    #[test]
    fn delimiter_split_at_every_position() {
        check_every_split(
            || lines(100),
            b"GET a\r\n\r\nSET b 1\r\n",
            &[b"GET a", b"", b"SET b 1"],
        );
    }

    #[test]
    fn delimiter_kept() {
        let make = || {
            Framer::new(
                Framing::Delimiter {
                    delimiter: b"\r\n".to_vec(),
                    keep: true,
                },
                10,
            )
            .unwrap()
        };
        check_every_split(make, b"a\r\nbc\r\n", &[b"a\r\n", b"bc\r\n"]);
    }

    #[test]
    fn long_delimiter_with_partial_matches() {
        let make = || {
            Framer::new(
                Framing::Delimiter {
                    delimiter: b"abab".to_vec(),
                    keep: false,
                },
                100,
            )
            .unwrap()
        };
        check_every_split(make, b"xabaabababyabab", &[b"xaba", b"aby"]);
    }

    #[test]
    fn many_frames_in_one_read() {
        let mut framer = lines(10);
        framer.extend(&b"a\r\n".repeat(1000));
        assert_eq!(drain(&mut framer).unwrap().len(), 1000);
    }

    #[test]
    fn delimiter_frame_at_the_maximum_and_one_over() {
        check_every_split(|| lines(5), b"12345\r\n", &[b"12345"]);
        let mut framer = lines(5);
        framer.extend(b"123456\r\n");
        assert_eq!(
            framer.next_frame(),
            Err(FrameError::TooLarge { size: 6, max: 5 })
        );
        // Poisoned: the same error again, nothing handed out.
        assert!(framer.next_frame().is_err());
    }

    #[test]
    fn delimiter_missing_is_refused_before_the_buffer_grows_past_the_maximum() {
        let mut framer = lines(5);
        // Five bytes and a possible half delimiter may still make a frame.
        framer.extend(b"12345\r");
        assert_eq!(framer.next_frame(), Ok(None));
        framer.extend(b"x");
        assert_eq!(
            framer.next_frame(),
            Err(FrameError::TooLarge { size: 7, max: 5 })
        );
    }

    fn prefixed(field: LengthField, max: usize) -> Framer {
        Framer::new(Framing::LengthPrefixed(field), max).unwrap()
    }

    #[test]
    fn length_prefix_split_at_every_position() {
        check_every_split(
            || prefixed(LengthField::prefix(4), 100),
            b"\0\0\0\x03abc\0\0\0\0\0\0\0\x02de",
            &[b"abc", b"", b"de"],
        );
    }

    #[test]
    fn length_prefix_widths_and_byte_orders() {
        for size in [1usize, 2, 4, 8] {
            for big_endian in [true, false] {
                let field = LengthField {
                    big_endian,
                    ..LengthField::prefix(size)
                };
                let mut header = vec![0u8; size];
                if big_endian {
                    header[size - 1] = 3;
                } else {
                    header[0] = 3;
                }
                let mut stream = header.clone();
                stream.extend_from_slice(b"xyz");
                check_every_split(|| prefixed(field.clone(), 10), &stream, &[b"xyz"]);
            }
        }
    }

    #[test]
    fn length_field_with_offset_adjustment_and_kept_header() {
        // A type byte, then a 2-byte length that counts the whole frame (header included),
        // the header kept: PostgreSQL's message layout with a 2-byte length.
        let field = LengthField {
            offset: 1,
            size: 2,
            big_endian: true,
            adjustment: -3,
            strip: 0,
        };
        check_every_split(
            || prefixed(field.clone(), 100),
            b"Q\0\x05hiZ\0\x03",
            &[b"Q\0\x05hi", b"Z\0\x03"],
        );
        let mut framer = prefixed(field, 100);
        framer.extend(b"Q\0\x05h");
        assert_eq!(framer.expected(), Some(5));
        framer.extend(b"Q\0\x01");
    }

    #[test]
    fn length_prefix_at_the_maximum_and_one_over() {
        check_every_split(
            || prefixed(LengthField::prefix(2), 3),
            b"\0\x03abc",
            &[b"abc"],
        );
        let mut framer = prefixed(LengthField::prefix(2), 3);
        // Refused from the header alone, before the payload arrives.
        framer.extend(b"\0\x04");
        assert_eq!(
            framer.next_frame(),
            Err(FrameError::TooLarge { size: 4, max: 3 })
        );
    }

    #[test]
    fn negative_length_is_an_error() {
        let field = LengthField {
            adjustment: -2,
            ..LengthField::prefix(1)
        };
        let mut framer = prefixed(field, 10);
        framer.extend(b"\x01");
        assert_eq!(
            framer.next_frame(),
            Err(FrameError::NegativeLength { length: -1 })
        );
    }

    #[test]
    fn encoded_frames_split_back_into_the_payloads() {
        let fields = [
            LengthField::prefix(1),
            LengthField {
                big_endian: false,
                ..LengthField::prefix(2)
            },
            LengthField::prefix(8),
            LengthField {
                adjustment: -4,
                ..LengthField::prefix(4)
            },
        ];
        let mut framings: Vec<Framing> = fields.into_iter().map(Framing::LengthPrefixed).collect();
        framings.push(Framing::Delimiter {
            delimiter: b"\r\n".to_vec(),
            keep: false,
        });
        for framing in framings {
            let payloads: [&[u8]; 3] = [b"", b"abc", &[7u8; 200]];
            let mut wire = Vec::new();
            for payload in payloads {
                framing.encode(payload, 1000, &mut wire).unwrap();
            }
            let mut framer = Framer::new(framing.clone(), 1000).unwrap();
            framer.extend(&wire);
            assert_eq!(drain(&mut framer).unwrap(), payloads, "{framing:?}");
        }
    }

    #[test]
    fn taking_the_buffered_bytes_forgets_their_error() {
        let mut framer = lines(4);
        framer.extend(b"toolong\r\n");
        assert!(framer.next_frame().is_err());
        assert!(framer.next_frame().is_err());
        assert_eq!(framer.take_buffered(), b"toolong\r\n");
        framer.extend(b"ok\r\n");
        assert_eq!(framer.next_frame(), Ok(Some(&b"ok"[..])));
    }

    #[test]
    fn header_payload_and_trailer_are_the_encoded_frame() {
        let framings = [
            Framing::LengthPrefixed(LengthField::prefix(4)),
            Framing::LengthPrefixed(LengthField {
                big_endian: false,
                adjustment: -2,
                ..LengthField::prefix(2)
            }),
            Framing::Delimiter {
                delimiter: b"\r\n".to_vec(),
                keep: false,
            },
            Framing::FixedSize(5),
        ];
        for framing in framings {
            let payload = b"hello";
            let mut whole = Vec::new();
            framing.encode(payload, 100, &mut whole).unwrap();
            let mut parts = Vec::new();
            framing.header(payload.len(), 100, &mut parts).unwrap();
            parts.extend_from_slice(payload);
            parts.extend_from_slice(framing.trailer());
            assert_eq!(parts, whole, "{framing:?}");
        }
        let mut out = Vec::new();
        assert_eq!(
            Framing::FixedSize(5).header(4, 100, &mut out),
            Err(EncodeError::WrongSize)
        );
        assert_eq!(
            Framing::LengthPrefixed(LengthField::prefix(1)).header(300, 1000, &mut out),
            Err(EncodeError::LengthDoesNotFit)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn what_cannot_be_encoded_is_refused() {
        let mut out = Vec::new();
        let one = Framing::LengthPrefixed(LengthField::prefix(1));
        assert_eq!(
            one.encode(&[0; 256], 1000, &mut out),
            Err(EncodeError::LengthDoesNotFit)
        );
        assert_eq!(
            one.encode(&[0; 11], 10, &mut out),
            Err(EncodeError::TooLarge)
        );
        let kept = Framing::LengthPrefixed(LengthField {
            strip: 0,
            ..LengthField::prefix(4)
        });
        assert_eq!(
            kept.encode(b"x", 10, &mut out),
            Err(EncodeError::HeaderNotLengthAlone)
        );
        let counted = Framing::LengthPrefixed(LengthField {
            adjustment: 2,
            ..LengthField::prefix(4)
        });
        assert_eq!(
            counted.encode(b"x", 10, &mut out),
            Err(EncodeError::LengthDoesNotFit)
        );
        assert_eq!(
            Framing::FixedSize(2).encode(b"x", 10, &mut out),
            Err(EncodeError::WrongSize)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn fixed_size_split_at_every_position() {
        let make = || Framer::new(Framing::FixedSize(3), 3).unwrap();
        check_every_split(make, b"abcdefghi", &[b"abc", b"def", b"ghi"]);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let delimiter = Framing::Delimiter {
            delimiter: vec![],
            keep: false,
        };
        assert!(Framer::new(delimiter, 1).is_err());
        let width = LengthField {
            size: 3,
            ..LengthField::prefix(4)
        };
        assert!(Framer::new(Framing::LengthPrefixed(width), 1).is_err());
        let strip = LengthField {
            strip: 5,
            ..LengthField::prefix(4)
        };
        assert!(Framer::new(Framing::LengthPrefixed(strip), 1).is_err());
        assert!(Framer::new(Framing::FixedSize(0), 1).is_err());
        assert!(Framer::new(Framing::FixedSize(2), 1).is_err());
    }

    #[test]
    fn take_buffered_and_unread_keep_order() {
        let mut framer = lines(100);
        framer.extend(b"a\r\nrawbytes");
        assert_eq!(framer.next_frame().unwrap(), Some(&b"a"[..]));
        assert_eq!(framer.take_buffered(), b"rawbytes");
        framer.extend(b"more\r\nb\r\n");
        framer.unread(b"x");
        assert_eq!(
            drain(&mut framer).unwrap(),
            vec![b"xmore".to_vec(), b"b".to_vec()]
        );
    }

    #[test]
    fn spare_and_commit_receive_in_place() {
        let mut framer = lines(100);
        let room = framer.spare(8);
        room[..5].copy_from_slice(b"ab\r\nc");
        framer.commit(5);
        assert_eq!(framer.next_frame().unwrap(), Some(&b"ab"[..]));
        assert_eq!(framer.buffered(), b"c");
        // Room is made by moving the rest to the front, not by growing forever.
        for _ in 0..1000 {
            let room = framer.spare(8);
            room[..3].copy_from_slice(b"\r\nc");
            framer.commit(3);
            assert_eq!(framer.next_frame().unwrap(), Some(&b"c"[..]));
        }
        assert!(framer.buf.len() < 64);
        framer.release_if_empty(0);
        assert_eq!(framer.buffered(), b"c", "not empty: kept");
        assert_eq!(framer.next_frame().unwrap(), None);
        framer.extend(b"\r\n");
        assert_eq!(framer.next_frame().unwrap(), Some(&b"c"[..]));
        framer.release_if_empty(0);
        assert_eq!(framer.buf.len(), 0);
    }

    /// A small deterministic generator (xorshift), so the random test needs no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_frames_in_random_reads_come_out_whole() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..200 {
            let frames: Vec<Vec<u8>> = (0..rng.below(20))
                .map(|_| (0..rng.below(50)).map(|_| b"ab\n"[rng.below(2)]).collect())
                .collect();
            let mut lined = Vec::new();
            let mut prefixed_stream = Vec::new();
            for frame in &frames {
                lined.extend_from_slice(frame);
                lined.push(b'\n');
                prefixed_stream.extend_from_slice(&(frame.len() as u16).to_le_bytes());
                prefixed_stream.extend_from_slice(frame);
            }
            let little = LengthField {
                big_endian: false,
                ..LengthField::prefix(2)
            };
            for (stream, mut framer) in [
                (
                    lined,
                    Framer::new(
                        Framing::Delimiter {
                            delimiter: b"\n".to_vec(),
                            keep: false,
                        },
                        64,
                    )
                    .unwrap(),
                ),
                (prefixed_stream, prefixed(little.clone(), 64)),
            ] {
                let mut got = Vec::new();
                let mut at = 0;
                while at < stream.len() {
                    let n = 1 + rng.below(stream.len() - at);
                    framer.extend(&stream[at..at + n]);
                    at += n;
                    got.extend(drain(&mut framer).unwrap());
                }
                assert_eq!(got, frames);
            }
        }
    }
}
