//! The loop's clock.
//!
//! `loop.time()` must be the same clock as Python's `time.monotonic()`: libraries
//! compare the two, so both read `CLOCK_MONOTONIC`. Times are kept as whole
//! nanoseconds (`i64`) inside the loop and handed to Python as float seconds.

use rustix::time::{clock_gettime, ClockId};

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The current `CLOCK_MONOTONIC` reading in nanoseconds.
#[inline]
pub fn now_ns() -> i64 {
    let ts = clock_gettime(ClockId::Monotonic);
    ts.tv_sec * NANOS_PER_SEC + ts.tv_nsec
}

/// The current `CLOCK_MONOTONIC` reading in seconds, as `time.monotonic()` gives it.
#[inline]
pub fn now_secs() -> f64 {
    ns_to_secs(now_ns())
}

/// Converts nanoseconds to float seconds.
#[inline]
pub fn ns_to_secs(ns: i64) -> f64 {
    ns as f64 / NANOS_PER_SEC as f64
}

/// Converts float seconds to nanoseconds, rounding up so a deadline is never early.
///
/// Infinities and values beyond the `i64` range saturate; NaN maps to `i64::MIN`, a
/// deadline already passed, as asyncio's loop runs a NaN timer at once.
#[inline]
pub fn secs_to_ns(secs: f64) -> i64 {
    if secs.is_nan() {
        // asyncio's loop runs a NaN timer at its next iteration (NaN compares false
        // against the end of the due window), so NaN sorts as already due.
        return i64::MIN;
    }
    // `as` saturates at the i64 bounds, which is what we want for ±inf.
    (secs * NANOS_PER_SEC as f64).ceil() as i64
}

/// The resolution of the monotonic clock in seconds (`time.get_clock_info('monotonic')`).
pub fn resolution_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_getres only writes into it.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 1e-9;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }

    #[test]
    fn conversions_round_trip_and_saturate() {
        assert_eq!(secs_to_ns(1.5), 1_500_000_000);
        assert_eq!(secs_to_ns(f64::INFINITY), i64::MAX);
        assert_eq!(secs_to_ns(f64::NEG_INFINITY), i64::MIN);
        assert_eq!(secs_to_ns(f64::NAN), i64::MIN);
        assert_eq!(ns_to_secs(2_500_000_000), 2.5);
        assert!(secs_to_ns(1e-10) >= 1, "a deadline rounds up, never early");
    }

    #[test]
    fn resolution_is_small_and_positive() {
        let r = resolution_secs();
        assert!(r > 0.0 && r < 0.01);
    }
}
