//! What the load generator and the upstream agree on: body size, the gRPC method and its framing.

use bytes::{BufMut, Bytes, BytesMut};

/// Response body size of every HTTP workload.
pub const BODY_SIZE: usize = 1024;
/// The gRPC unary method the upstream serves.
pub const GRPC_PATH: &str = "/weft.bench.Echo/Unary";

/// One gRPC length-prefixed message: flag 0 (not compressed), length as u32 big-endian, the bytes.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(u32::try_from(message.len()).expect("bench messages are small"));
    b.put_slice(message);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_frame_prefix() {
        let f = grpc_frame(&[7u8; 300]);
        assert_eq!(&f[..5], &[0, 0, 0, 1, 44]);
        assert_eq!(f.len(), 305);
    }
}
