//! Datatypes (docs/protocol/shm.md section 6) and owned, named tensors.

use crate::error::{err, Result, Status};

/// The `dtype` field: `foundation_ml.DataType`, names of the Open Inference Protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DataType {
    /// 1 byte, 0 or 1.
    Bool = 1,
    /// u8
    Uint8 = 2,
    /// u16
    Uint16 = 3,
    /// u32
    Uint32 = 4,
    /// u64
    Uint64 = 5,
    /// i8
    Int8 = 6,
    /// i16
    Int16 = 7,
    /// i32
    Int32 = 8,
    /// i64
    Int64 = 9,
    /// IEEE binary16 bit patterns.
    Fp16 = 10,
    /// bfloat16 bit patterns.
    Bf16 = 11,
    /// f32
    Fp32 = 12,
    /// f64
    Fp64 = 13,
    /// Opaque bytes; the shape counts bytes.
    Bytes = 14,
}

const ALL: [DataType; 14] = [
    DataType::Bool,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Fp16,
    DataType::Bf16,
    DataType::Fp32,
    DataType::Fp64,
    DataType::Bytes,
];

impl DataType {
    /// The datatype of a wire code, `None` for an unknown one.
    pub fn from_code(code: u32) -> Option<DataType> {
        ALL.get((code as usize).wrapping_sub(1)).copied()
    }

    /// The datatype named `name` (`"FP32"`, `"INT64"`, ...; case-insensitive).
    pub fn from_name(name: &str) -> Option<DataType> {
        ALL.iter()
            .copied()
            .find(|d| d.name().eq_ignore_ascii_case(name))
    }

    /// The wire code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        use DataType::*;
        match self {
            Bool | Uint8 | Int8 | Bytes => 1,
            Uint16 | Int16 | Fp16 | Bf16 => 2,
            Uint32 | Int32 | Fp32 => 4,
            Uint64 | Int64 | Fp64 => 8,
        }
    }

    /// The protocol's name, e.g. `"FP32"`.
    pub fn name(self) -> &'static str {
        use DataType::*;
        match self {
            Bool => "BOOL",
            Uint8 => "UINT8",
            Uint16 => "UINT16",
            Uint32 => "UINT32",
            Uint64 => "UINT64",
            Int8 => "INT8",
            Int16 => "INT16",
            Int32 => "INT32",
            Int64 => "INT64",
            Fp16 => "FP16",
            Bf16 => "BF16",
            Fp32 => "FP32",
            Fp64 => "FP64",
            Bytes => "BYTES",
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust element type with a protocol datatype (plain old data, little-endian on the wire).
pub trait Element: Copy + Default + sealed::Sealed + 'static {
    /// Its datatype.
    const DTYPE: DataType;
    /// Append the little-endian bytes of `values`.
    fn extend_le(values: &[Self], out: &mut Vec<u8>);
    /// Decode one element from `size_of::<Self>()` little-endian bytes.
    fn from_le(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $d:ident) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DataType = DataType::$d;
            fn extend_le(values: &[Self], out: &mut Vec<u8>) {
                out.reserve(values.len() * std::mem::size_of::<$t>());
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            fn from_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
        }
    };
}
element!(u8, Uint8);
element!(u16, Uint16);
element!(u32, Uint32);
element!(u64, Uint64);
element!(i8, Int8);
element!(i16, Int16);
element!(i32, Int32);
element!(i64, Int64);
element!(f32, Fp32);
element!(f64, Fp64);

/// A named tensor that owns its bytes (C-contiguous, little-endian).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The tensor's name (at most 63 UTF-8 bytes).
    pub name: String,
    /// Its element type.
    pub datatype: DataType,
    /// Its dimensions (empty for a scalar; at most 8).
    pub shape: Vec<u64>,
    /// `product(shape) * itemsize` bytes, little-endian, row-major.
    pub data: Vec<u8>,
}

/// Number of elements of `shape` (1 for a scalar); `None` on overflow.
pub fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
}

/// Bytes of a tensor of `datatype` and `shape`; `None` on overflow.
pub fn byte_size(datatype: DataType, shape: &[u64]) -> Option<usize> {
    let bytes = element_count(shape)?.checked_mul(datatype.itemsize() as u64)?;
    usize::try_from(bytes).ok()
}

impl Tensor {
    /// A tensor from raw little-endian bytes; INVALID_INPUT unless `data` has exactly
    /// `product(shape) * itemsize` bytes and the shape has at most 8 dimensions.
    pub fn new(
        name: impl Into<String>,
        datatype: DataType,
        shape: &[u64],
        data: Vec<u8>,
    ) -> Result<Tensor> {
        let name = name.into();
        if shape.len() > crate::layout::MAX_NDIM {
            return err(
                Status::InvalidInput,
                format!("tensor {name:?} has {} dimensions (at most 8)", shape.len()),
            );
        }
        match byte_size(datatype, shape) {
            Some(n) if n == data.len() => Ok(Tensor {
                name,
                datatype,
                shape: shape.to_vec(),
                data,
            }),
            _ => err(
                Status::InvalidInput,
                format!(
                    "tensor {name:?}: {} bytes do not make a {} tensor of shape {shape:?}",
                    data.len(),
                    datatype.name()
                ),
            ),
        }
    }

    /// A tensor of `values` (e.g. `f32` gives FP32).
    pub fn from_slice<T: Element>(
        name: impl Into<String>,
        shape: &[u64],
        values: &[T],
    ) -> Result<Tensor> {
        let mut data = Vec::new();
        T::extend_le(values, &mut data);
        Tensor::new(name, T::DTYPE, shape, data)
    }

    /// The elements as `T`; INVALID_INPUT if `T` is not this tensor's datatype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.datatype {
            return err(
                Status::InvalidInput,
                format!(
                    "tensor {:?} is {}, not {}",
                    self.name,
                    self.datatype.name(),
                    T::DTYPE.name()
                ),
            );
        }
        Ok(self
            .data
            .chunks_exact(std::mem::size_of::<T>())
            .map(T::from_le)
            .collect())
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.datatype.itemsize()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}
