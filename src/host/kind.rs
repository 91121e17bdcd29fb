//! Element kinds and devices of the lite build's tensors (the names are
//! tch's), with DLPack's codes for each kind and the element reads and
//! writes the conversions use.

use crate::ffi::dlpack::{kDLBfloat, kDLBool, kDLFloat, kDLInt, kDLUInt, DLDataType};

/// An element kind; the names are tch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Uint8,
    Int8,
    Int16,
    Int,
    Int64,
    Half,
    Float,
    Double,
    Bool,
    BFloat16,
}

impl Kind {
    pub fn elt_size_in_bytes(self) -> usize {
        match self {
            Kind::Uint8 | Kind::Int8 | Kind::Bool => 1,
            Kind::Int16 | Kind::Half | Kind::BFloat16 => 2,
            Kind::Int | Kind::Float => 4,
            Kind::Int64 | Kind::Double => 8,
        }
    }

    pub(super) fn is_floating_point(self) -> bool {
        matches!(
            self,
            Kind::Half | Kind::Float | Kind::Double | Kind::BFloat16
        )
    }

    /// DLPack's (code, bits) for the kind.
    pub(super) fn dl_type(self) -> (u8, u8) {
        let bits = (self.elt_size_in_bytes() * 8) as u8;
        let code = match self {
            Kind::Uint8 => kDLUInt,
            Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64 => kDLInt,
            Kind::Half | Kind::Float | Kind::Double => kDLFloat,
            Kind::BFloat16 => kDLBfloat,
            Kind::Bool => kDLBool,
        };
        (code, bits)
    }

    pub(super) fn of_dl_type(dtype: DLDataType) -> Option<Kind> {
        [
            Kind::Uint8,
            Kind::Int8,
            Kind::Int16,
            Kind::Int,
            Kind::Int64,
            Kind::Half,
            Kind::Float,
            Kind::Double,
            Kind::Bool,
            Kind::BFloat16,
        ]
        .into_iter()
        .find(|k| k.dl_type() == (dtype.code, dtype.bits) && dtype.lanes == 1)
    }

    /// Element `i` of `data` (of this kind) as f64.
    ///
    /// # Safety
    /// `data` points to at least `i + 1` elements of this kind.
    pub(super) unsafe fn read(self, data: *const u8, i: usize) -> f64 {
        let at = |size: usize| data.wrapping_add(i * size);
        // SAFETY: the caller's contract; unaligned reads make no alignment
        // assumption about foreign memory.
        unsafe {
            match self {
                Kind::Uint8 => f64::from(*at(1)),
                Kind::Bool => f64::from(u8::from(*at(1) != 0)),
                Kind::Int8 => f64::from(at(1).cast::<i8>().read_unaligned()),
                Kind::Int16 => f64::from(at(2).cast::<i16>().read_unaligned()),
                Kind::Int => f64::from(at(4).cast::<i32>().read_unaligned()),
                Kind::Int64 => at(8).cast::<i64>().read_unaligned() as f64,
                Kind::Half => at(2).cast::<half::f16>().read_unaligned().to_f64(),
                Kind::BFloat16 => at(2).cast::<half::bf16>().read_unaligned().to_f64(),
                Kind::Float => f64::from(at(4).cast::<f32>().read_unaligned()),
                Kind::Double => at(8).cast::<f64>().read_unaligned(),
            }
        }
    }

    /// Writes `value` as element `i` of `data` (of this kind), as Rust's `as`
    /// casts it (saturating to an integer's range).
    ///
    /// # Safety
    /// `data` points to at least `i + 1` writable elements of this kind.
    pub(super) unsafe fn write(self, data: *mut u8, i: usize, value: f64) {
        let at = |size: usize| data.wrapping_add(i * size);
        // SAFETY: the caller's contract.
        unsafe {
            match self {
                Kind::Uint8 => *at(1) = value as u8,
                Kind::Bool => *at(1) = u8::from(value != 0.0),
                Kind::Int8 => at(1).cast::<i8>().write_unaligned(value as i8),
                Kind::Int16 => at(2).cast::<i16>().write_unaligned(value as i16),
                Kind::Int => at(4).cast::<i32>().write_unaligned(value as i32),
                Kind::Int64 => at(8).cast::<i64>().write_unaligned(value as i64),
                Kind::Half => at(2)
                    .cast::<half::f16>()
                    .write_unaligned(half::f16::from_f64(value)),
                Kind::BFloat16 => at(2)
                    .cast::<half::bf16>()
                    .write_unaligned(half::bf16::from_f64(value)),
                Kind::Float => at(4).cast::<f32>().write_unaligned(value as f32),
                Kind::Double => at(8).cast::<f64>().write_unaligned(value),
            }
        }
    }
}

/// A device; this build's tensors live on the host only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(usize),
    Mps,
}

/// A Rust element type and its kind.
pub trait Element: Copy {
    const KIND: Kind;
}

macro_rules! elements {
    ($($t:ty => $kind:ident),*) => {
        $(impl Element for $t { const KIND: Kind = Kind::$kind; })*
    };
}
elements!(u8 => Uint8, i8 => Int8, i16 => Int16, i32 => Int, i64 => Int64, f32 => Float,
          f64 => Double, bool => Bool, half::f16 => Half, half::bf16 => BFloat16);
