//! Key material that is overwritten with zeros when it is dropped, and never shown.
//!
//! Written here rather than taken from the `zeroize` crate: the project adds no crate for twenty
//! lines. The writes are volatile and followed by a compiler fence so that the optimizer cannot
//! drop them as dead stores to memory about to be freed.
//!
//! What it cannot reach, and does not pretend to: copies the type system does not see (a `Vec`'s
//! earlier allocations before it grew, registers and stack spills), the key schedules ring keeps
//! inside `aead::LessSafeKey` and `hmac::Key`, and HTTP buffers inside `fhirside-fetch`, hyper and
//! rustls that carried a data key to or from Vault or Azure Key Vault. It shortens how long key
//! bytes linger in memory; it is not a guarantee that none remain.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{compiler_fence, Ordering};

/// Memory that can be overwritten with zeros.
pub trait Zeroize {
    fn zeroize(&mut self);
}

fn zero_bytes(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        // SAFETY: `byte` is a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
    compiler_fence(Ordering::SeqCst);
}

impl<const N: usize> Zeroize for [u8; N] {
    fn zeroize(&mut self) {
        zero_bytes(self);
    }
}

impl Zeroize for Vec<u8> {
    fn zeroize(&mut self) {
        zero_bytes(self);
        self.clear();
    }
}

impl Zeroize for String {
    fn zeroize(&mut self) {
        // Safe: take the bytes out of the string, zero them, leave an empty string behind.
        let mut bytes = std::mem::take(self).into_bytes();
        bytes.zeroize();
    }
}

/// Holds a secret, zeroes it on drop, and shows `<redacted>` in `Debug`. There is deliberately
/// no `Display`, `Clone` or `Serialize`: copying or printing a secret must be written out.
pub struct Zeroizing<T: Zeroize>(T);

impl<T: Zeroize> Zeroizing<T> {
    pub fn new(value: T) -> Zeroizing<T> {
        Zeroizing(value)
    }
}

impl<T: Zeroize> Drop for Zeroizing<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> Deref for Zeroizing<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> DerefMut for Zeroizing<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Zeroize> fmt::Debug for Zeroizing<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroize_overwrites_every_byte() {
        let mut key = [0xA5u8; 32];
        key.zeroize();
        assert_eq!(key, [0u8; 32]);

        let mut bytes = vec![7u8; 10];
        let pointer = bytes.as_ptr();
        let capacity = bytes.capacity();
        bytes.zeroize();
        assert!(bytes.is_empty());
        // The allocation is kept, and its former contents are zeros.
        assert_eq!(bytes.as_ptr(), pointer);
        // SAFETY: the allocation is still owned by `bytes` and was initialised up to 10 bytes.
        let old = unsafe { std::slice::from_raw_parts(pointer, 10.min(capacity)) };
        assert!(old.iter().all(|b| *b == 0));
    }

    #[test]
    fn debug_hides_the_secret() {
        let secret = Zeroizing::new(String::from("hunter2"));
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(&*secret, "hunter2");
    }
}
