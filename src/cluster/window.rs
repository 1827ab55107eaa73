//! A message frame written straight into the sender's staging buffer, by a serializer of
//! postcard's format of its own.
//!
//! Every message to another node is encoded on its sender's thread, so this is the one place
//! where the cluster's format costs per message what the in-process runtime does not. Through
//! postcard, each integer is first written into an array of its own and then handed to the
//! output as a slice, which the output copies a byte at a time with a check of its room for
//! each: about two loops a number. [`Window`] writes each number where it goes, in one loop,
//! with the same check (callgrind, 3 nodes x 16: BENCHMARKS.md, twenty-first round).
//!
//! The bytes are postcard's, type by type (`postcard::Serializer`, version 1): an unsigned
//! integer as a varint (seven bits a byte, least significant first, the high bit on every byte
//! but the last), a signed one zigzagged first (`i8` as its byte), a `bool` and a `u8` as one
//! byte, floats as their little-endian bits, a string or bytes as their length then their
//! bytes, a `char` as the string of it, an option as 0 or 1 and the value, a variant as its
//! index, a sequence or map as its length then its items, structs and tuples as their fields.
//! Tests compare this with postcard over values of every kind serde has
//! (`wire::tests::the_window_writes_what_postcard_writes_for_every_kind_of_value`) and over
//! frames on both sides of the window's size (`the_message_path_writes_what_postcard_writes`).
//!
//! Anything else, and anything that does not fit, is not written here: the serializer says
//! [`Unwritten`], and the caller writes the frame with postcard itself, which gives the same
//! bytes, or postcard's own error (a sequence of unknown length, the message's `Serialize`
//! failing). A string the message writes through `collect_str` goes that way too.

use std::fmt;

use serde::ser::{self, Serialize};

/// The bytes a frame is written into: 4 of length, then up to 60 of body (the bench's token,
/// three integers, takes at most 36 with the frame's kind, channel and number).
pub(super) const WINDOW: usize = 64;

/// The most bytes postcard writes for one integer of up to 64 bits.
const MAX_VARINT: usize = 10;

/// A frame being written into [`WINDOW`] bytes at the end of the staging buffer.
pub(super) struct Window<'a> {
    bytes: &'a mut [u8; WINDOW],
    at: usize,
}

/// The window did not take the value: it is too long, or not one this serializer writes (see
/// the module documentation). Nothing written counts; the caller goes postcard's way.
#[derive(Debug)]
pub(super) struct Unwritten;

impl fmt::Display for Unwritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not written into the window")
    }
}

impl std::error::Error for Unwritten {}

impl ser::Error for Unwritten {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Unwritten
    }
}

type Written = Result<(), Unwritten>;

impl<'a> Window<'a> {
    /// A window over `bytes`, writing from byte `at` (the bytes before are left for the
    /// length).
    #[inline(always)]
    pub(super) fn over(bytes: &'a mut [u8; WINDOW], at: usize) -> Self {
        Window { bytes, at }
    }

    /// Where what was written ends.
    #[inline(always)]
    pub(super) fn end(&self) -> usize {
        self.at
    }

    /// Writes one byte.
    #[inline(always)]
    pub(super) fn byte(&mut self, byte: u8) -> Written {
        *self.bytes.get_mut(self.at).ok_or(Unwritten)? = byte;
        self.at += 1;
        Ok(())
    }

    /// Writes `n` as postcard writes an unsigned integer of any width up to 64 bits
    /// ([`varint_with`]'s bytes).
    ///
    /// With room for the longest (ten bytes), into a ten-byte piece of the window: one check of
    /// room a number instead of one a byte, and a loop the compiler bounds by the piece. A
    /// frame's numbers are most of its bytes (the bench's: five numbers, about ten bytes), and
    /// they took 91 instructions a frame byte by byte, 70 this way (callgrind, 3 nodes x 16:
    /// BENCHMARKS.md, twenty-third round). Nearer the window's end, a byte at a time, each
    /// checked.
    #[inline(always)]
    pub(super) fn varint(&mut self, n: u64) -> Written {
        let at = self.at;
        if let Some(room) = self.bytes[at.min(WINDOW)..].first_chunk_mut::<MAX_VARINT>() {
            let mut n = n;
            for (k, byte) in room.iter_mut().enumerate() {
                if n < 0x80 {
                    *byte = n as u8;
                    self.at = at + k + 1;
                    return Ok(());
                }
                *byte = n as u8 | 0x80;
                n >>= 7;
            }
            // Never: ten bytes of seven bits hold any u64.
            return Err(Unwritten);
        }
        let mut at = at;
        varint_with(n, |byte| {
            *self.bytes.get_mut(at).ok_or(Unwritten)? = byte;
            at += 1;
            Ok(())
        })?;
        self.at = at;
        Ok(())
    }

    /// The same for a 128-bit integer (up to 19 bytes).
    fn varint_u128(&mut self, mut n: u128) -> Written {
        while n >= 0x80 {
            self.byte(n as u8 | 0x80)?;
            n >>= 7;
        }
        self.byte(n as u8)
    }

    /// Writes `bytes` as they are.
    #[inline]
    fn raw(&mut self, bytes: &[u8]) -> Written {
        let end = self.at.checked_add(bytes.len()).ok_or(Unwritten)?;
        self.bytes
            .get_mut(self.at..end)
            .ok_or(Unwritten)?
            .copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }

    /// Writes a string's or a byte string's length, then its bytes.
    #[inline]
    fn with_length(&mut self, bytes: &[u8]) -> Written {
        self.varint(bytes.len() as u64)?;
        self.raw(bytes)
    }
}

/// Writes `n` as postcard writes an unsigned integer of any width, through `push` a byte at a
/// time: seven bits a byte, least significant first, the high bit set on every byte but the
/// last. The writer of them for snapshot parts' packed counts (`wire::push_varint`) and for
/// the window's last bytes; [`Window::varint`] writes the same bytes where it has room for
/// ten (tested against postcard, as everything the window writes).
#[inline(always)]
pub(super) fn varint_with<E>(
    mut n: u64,
    mut push: impl FnMut(u8) -> Result<(), E>,
) -> Result<(), E> {
    while n >= 0x80 {
        push(n as u8 | 0x80)?;
        n >>= 7;
    }
    push(n as u8)
}

/// postcard's zigzag: 0, -1, 1, -2... as 0, 1, 2, 3..., so that small numbers either way take
/// few bytes.
#[inline(always)]
fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// A tuple or struct variant opens with its index; its fields follow in turn.
macro_rules! variants_with_fields {
    ($($method:ident),*) => {$(
        #[inline]
        fn $method(
            self,
            _: &'static str,
            index: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self, Unwritten> {
            self.varint(u64::from(index))?;
            Ok(self)
        }
    )*};
}

impl ser::Serializer for &mut Window<'_> {
    type Ok = ();
    type Error = Unwritten;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Written {
        self.byte(u8::from(v))
    }

    #[inline]
    fn serialize_i8(self, v: i8) -> Written {
        self.byte(v as u8)
    }

    #[inline]
    fn serialize_i16(self, v: i16) -> Written {
        self.varint(zigzag(i64::from(v)))
    }

    #[inline]
    fn serialize_i32(self, v: i32) -> Written {
        self.varint(zigzag(i64::from(v)))
    }

    #[inline]
    fn serialize_i64(self, v: i64) -> Written {
        self.varint(zigzag(v))
    }

    fn serialize_i128(self, v: i128) -> Written {
        self.varint_u128(((v << 1) ^ (v >> 127)) as u128)
    }

    #[inline]
    fn serialize_u8(self, v: u8) -> Written {
        self.byte(v)
    }

    #[inline]
    fn serialize_u16(self, v: u16) -> Written {
        self.varint(u64::from(v))
    }

    #[inline]
    fn serialize_u32(self, v: u32) -> Written {
        self.varint(u64::from(v))
    }

    #[inline]
    fn serialize_u64(self, v: u64) -> Written {
        self.varint(v)
    }

    fn serialize_u128(self, v: u128) -> Written {
        self.varint_u128(v)
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Written {
        self.raw(&v.to_bits().to_le_bytes())
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Written {
        self.raw(&v.to_bits().to_le_bytes())
    }

    fn serialize_char(self, v: char) -> Written {
        self.with_length(v.encode_utf8(&mut [0; 4]).as_bytes())
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Written {
        self.with_length(v.as_bytes())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Written {
        self.with_length(v)
    }

    #[inline]
    fn serialize_none(self) -> Written {
        self.byte(0)
    }

    #[inline]
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Written {
        self.byte(1)?;
        value.serialize(self)
    }

    #[inline]
    fn serialize_unit(self) -> Written {
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _: &'static str) -> Written {
        Ok(())
    }

    #[inline]
    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Written {
        self.varint(u64::from(index))
    }

    #[inline]
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Written {
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Written {
        self.varint(u64::from(index))?;
        value.serialize(self)
    }

    /// A sequence of unknown length is postcard's error: the caller's way gets it from there.
    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Unwritten> {
        self.varint(len.ok_or(Unwritten)? as u64)?;
        Ok(self)
    }

    #[inline]
    fn serialize_tuple(self, _: usize) -> Result<Self, Unwritten> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Unwritten> {
        Ok(self)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self, Unwritten> {
        self.varint(len.ok_or(Unwritten)? as u64)?;
        Ok(self)
    }

    #[inline]
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Unwritten> {
        Ok(self)
    }

    variants_with_fields!(serialize_tuple_variant, serialize_struct_variant);

    /// postcard writes it through `Display` twice (its length, then its bytes): left to it.
    fn collect_str<T: ?Sized + fmt::Display>(self, _: &T) -> Written {
        Err(Unwritten)
    }
}

/// The parts of a compound value are written one after another, with nothing between or after
/// them (a sequence's or a map's length went first).
macro_rules! in_turn {
    ($($kind:ident :: $method:ident),*) => {$(
        impl ser::$kind for &mut Window<'_> {
            type Ok = ();
            type Error = Unwritten;

            #[inline]
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Written {
                value.serialize(&mut **self)
            }

            #[inline]
            fn end(self) -> Written {
                Ok(())
            }
        }
    )*};
}

in_turn!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for &mut Window<'_> {
    type Ok = ();
    type Error = Unwritten;

    #[inline]
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Written {
        key.serialize(&mut **self)
    }

    #[inline]
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Written {
        value.serialize(&mut **self)
    }

    #[inline]
    fn end(self) -> Written {
        Ok(())
    }
}

/// Fields of a struct, or of a struct variant, in turn (a skipped field writes nothing, as in
/// postcard).
macro_rules! fields_in_turn {
    ($($kind:ident),*) => {$(
        impl ser::$kind for &mut Window<'_> {
            type Ok = ();
            type Error = Unwritten;

            #[inline]
            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Written {
                value.serialize(&mut **self)
            }

            #[inline]
            fn end(self) -> Written {
                Ok(())
            }
        }
    )*};
}

fields_in_turn!(SerializeStruct, SerializeStructVariant);
